// charts.js - a confidence sparkline on a canvas, and the live per-agent charts (uPlot) with a
// vertical marker at each alert. uPlot is loaded from /assets/uPlot.iife.min.js; without it the
// charts say so and the rest of the page works.

import {el} from './util.js';

export function sparkline(values, width = 120, height = 24) {
  const c = el('canvas', {width, height, class: 'spark', 'aria-label': 'confidence sparkline'});
  const g = c.getContext('2d');
  if (!g || values.length < 2) return c;
  g.strokeStyle = '#3b82f6';
  g.lineWidth = 1.5;
  g.beginPath();
  const n = values.length;
  values.forEach((v, i) => {
    const x = (i / (n - 1)) * (width - 2) + 1;
    const y = height - 1 - Math.max(0, Math.min(1, v)) * (height - 2);
    if (i) g.lineTo(x, y);
    else g.moveTo(x, y);
  });
  g.stroke();
  return c;
}

// Draw a red vertical line at each alert time (seconds) inside the plot area.
function alertMarkers(getAlerts) {
  return {
    hooks: {
      draw: [
        (u) => {
          const g = u.ctx;
          const {left, top, width, height} = u.bbox;
          g.save();
          g.strokeStyle = '#dc2626';
          g.lineWidth = 2 * devicePixelRatio;
          let drawn = 0;
          for (const t of getAlerts()) {
            const x = Math.round(u.valToPos(t, 'x', true));
            if (!(x >= left && x <= left + width)) continue;
            drawn++;
            g.beginPath();
            g.moveTo(x, top);
            g.lineTo(x, top + height);
            g.stroke();
          }
          g.restore();
          u.root.dataset.markers = String(drawn); // alert markers in view (read by the tests)
        },
      ],
    },
  };
}

// A live time-series chart: update(points [[tSec, v]...], alerts [tSec...]).
export class LiveChart {
  constructor(container, title, unit, range) {
    this.alerts = [];
    this.container = container;
    if (!window.uPlot) {
      container.append(el('p', {class: 'muted'}, `${title}: charts not available (uPlot missing)`));
      this.u = null;
      return;
    }
    const opts = {
      title,
      width: Math.max(300, Math.min(container.clientWidth || 600, 900)),
      height: 180,
      scales: {x: {time: true}, y: range ? {range} : {}},
      series: [{}, {label: unit, stroke: '#2563eb', width: 1.5, points: {show: false}}],
      axes: [{}, {size: 60}],
      legend: {show: false},
      plugins: [alertMarkers(() => this.alerts)],
    };
    this.u = new window.uPlot(opts, [[], []], container);
  }

  update(points, alerts) {
    if (!this.u) return;
    this.alerts = alerts;
    const xs = new Array(points.length);
    const ys = new Array(points.length);
    for (let i = 0; i < points.length; i++) {
      xs[i] = points[i][0];
      ys[i] = points[i][1];
    }
    this.u.setData([xs, ys]);
  }

  destroy() {
    if (this.u) this.u.destroy();
  }
}
