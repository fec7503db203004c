/** The panel's icon in the sidebar tab and the command palette. */
import { LabIcon } from '@jupyterlab/ui-components';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><path d="M3 7l9-4 9 4v10l-9 4-9-4V7zm2 1.3v7.4l7 3.1 7-3.1V8.3l-7 3.1-7-3.1zm7 1.4l6.6-2.9L12 4.9 5.4 7.8 12 9.7z"/>
<rect x="7" y="13" width="2" height="4"/><rect x="10.9" y="11.5" width="2" height="7"/><rect x="14.8" y="10" width="2" height="6"/></g></svg>`;

export const sandboxIcon = new LabIcon({
  name: 'sandbox-kernel:panel',
  svgstr: ICON_SVG
});
