// charts.js - a confidence sparkline on a canvas, and the live per-agent charts (uPlot) with a
// vertical marker at each alert. uPlot is loaded from /assets/uPlot.iife.min.js; without it the
// charts say so and the rest of the page works.

import {el} from './util.js';

// The theme's accent colour, read once (getComputedStyle per sparkline forced a style
// recalculation per row on every render).
let accentColour = '';
function accent() {
  if (!accentColour) {
    accentColour = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#3b82f6';
  }
  return accentColour;
}

// A sparkline scaled to its own minimum and maximum (confidences of 0.001-0.15 must not draw
// flat); null values are gaps. The scale is in the title and data-min/max.
export function sparkline(values, width = 120, height = 22) {
  // Buckets without data are left out: the line joins the ones that have some.
  const vals = values.filter((v) => v !== null && v !== undefined && isFinite(v)).map(Number);
  const fin = vals;
  const lo = fin.length ? Math.min(...fin) : 0;
  const hi = fin.length ? Math.max(...fin) : 1;
  const c = el('canvas', {width, height, class: 'spark', 'aria-label': 'sparkline',
    title: fin.length ? `${lo.toPrecision(3)} – ${hi.toPrecision(3)}` : 'no data',
    dataset: {min: String(lo), max: String(hi)}});
  const g = c.getContext('2d');
  if (!g || fin.length < 2) return c;
  g.strokeStyle = accent();
  g.lineWidth = 1.5;
  g.beginPath();
  const n = vals.length;
  const span = hi - lo || 1;
  let pen = false;
  vals.forEach((v, i) => {
    if (v === null) {
      pen = false;
      return;
    }
    const x = (i / (n - 1)) * (width - 2) + 1;
    const y = height - 2 - ((v - lo) / span) * (height - 4);
    if (pen) g.lineTo(x, y);
    else g.moveTo(x, y);
    pen = true;
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

const PALETTE = ['#2563eb', '#ea580c', '#16a34a', '#7c3aed', '#0891b2', '#d97706', '#db2777', '#4b5563'];

// A chart of a range from the store: x in Unix seconds, any number of series (null: no data),
// an optional band between two of them (a quantile band), red markers at alert times.
//   new HistoryChart(box, {title, unit, band: [hiIndex, loIndex], names: [...]})
//   update(t, [ys...], alerts) ; the plot's data-points attribute counts the non-null values.
export class HistoryChart {
  constructor(container, o) {
    this.alerts = [];
    this.o = o;
    this.container = container;
    this.names = null;
    this.u = null;
    if (!window.uPlot) {
      container.append(el('p', {class: 'muted'}, `${o.title}: charts not available (uPlot missing)`));
    }
  }

  build(names) {
    if (this.u) this.u.destroy();
    this.names = names.join('\u0000');
    const series = [{}].concat(names.map((n, i) => ({
      label: n,
      stroke: this.o.colors ? this.o.colors[i] : PALETTE[i % PALETTE.length],
      width: this.o.band && (i + 1 === this.o.band[0] || i + 1 === this.o.band[1]) ? 0.5 : 1.5,
      points: {show: false},
      spanGaps: false,
    })));
    const opts = {
      title: this.o.title,
      width: Math.max(320, (this.container.clientWidth || 900) - 10),
      height: this.o.height || 170,
      scales: {x: {time: true}, y: this.o.range ? {range: this.o.range} : {}},
      series,
      axes: [{stroke: 'currentColor'}, {size: 64, stroke: 'currentColor'}],
      legend: {show: names.length > 1},
      plugins: [alertMarkers(() => this.alerts)],
    };
    if (this.o.band) {
      opts.bands = [{series: this.o.band, fill: 'rgba(37, 99, 235, 0.15)'}];
    }
    this.u = new window.uPlot(opts, [[]].concat(names.map(() => [])), this.container);
  }

  update(t, ys, alerts, names) {
    if (!window.uPlot) return;
    const n = names || this.o.names;
    if (!this.u || this.names !== n.join('\u0000')) this.build(n);
    this.alerts = alerts || [];
    this.u.setData([t].concat(ys));
    let pts = 0;
    for (const y of ys) for (const v of y) if (v !== null && v !== undefined) pts++;
    this.u.root.dataset.points = String(pts);
  }

  destroy() {
    if (this.u) this.u.destroy();
  }
}
