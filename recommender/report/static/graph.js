/* The interactive communication graph (recommender, Apache-2.0).
 * Reads the graph from the JSON element #graph-data, draws it with
 * Cytoscape.js and the fCoSE layout (namespaces and outside address classes as compound boxes),
 * shows an edge's ports on hover and, on a click, a node's edges with ports and counts in the
 * side panel. The layout's random start is seeded, so the same page gives the same drawing. */
(function () {
  'use strict';
  var root = document.querySelector('[data-graph]');
  if (!root) { return; }
  var data = JSON.parse(document.getElementById('graph-data').textContent);
  var view = root.querySelector('.rg-view');
  var tip = root.querySelector('.rg-tip');
  var details = root.querySelector('.rg-details');
  if (typeof cytoscapeFcose === 'function') { cytoscape.use(cytoscapeFcose); }

  var FONT = '12px system-ui, sans-serif';
  var ctx = document.createElement('canvas').getContext('2d');
  ctx.font = FONT;
  function textWidth(t) { return Math.ceil(ctx.measureText(t).width); }

  var byId = {};
  var elements = [];
  data.groups.forEach(function (g) {
    elements.push({group: 'nodes', data: {id: g.id, label: g.label, kind: g.kind},
                   classes: 'grp ' + g.kind});
  });
  data.nodes.forEach(function (n) {
    byId[n.id] = n;
    elements.push({group: 'nodes',
                   data: {id: n.id, label: n.label, parent: n.parent,
                          w: Math.max(48, textWidth(n.label) + 18)},
                   classes: n.cls});
  });
  data.edges.forEach(function (e) {
    elements.push({group: 'edges',
                   data: {id: e.id, source: e.source, target: e.target, width: e.width},
                   classes: e.denied ? 'denied' : 'allowed'});
  });

  var cy = cytoscape({
    container: view,
    elements: elements,
    minZoom: 0.05,
    maxZoom: 4,
    boxSelectionEnabled: false,
    style: [
      {selector: 'node[w]', style: {'width': 'data(w)', 'height': 24}},
      {selector: 'node', style: {
        'shape': 'round-rectangle',
        'label': 'data(label)', 'font-family': 'system-ui, sans-serif', 'font-size': 12,
        'text-valign': 'center', 'text-halign': 'center', 'color': '#1f2328',
        'background-color': '#ddf4ff', 'border-width': 1, 'border-color': '#54aeff'}},
      {selector: 'node.external', style: {'background-color': '#fff1e5', 'border-color': '#fb8f44'}},
      {selector: 'node.nodes', style: {'background-color': '#eaeef2', 'border-color': '#8c959f'}},
      {selector: 'node.entity', style: {'background-color': '#fbefff', 'border-color': '#c297ff'}},
      {selector: 'node.grp', style: {
        'shape': 'round-rectangle', 'background-color': '#f6f8fa', 'background-opacity': 0.6,
        'border-color': '#afb8c1', 'border-width': 1, 'padding': 12,
        'text-valign': 'top', 'text-halign': 'center', 'text-margin-y': -3,
        'font-weight': 'bold', 'font-size': 13, 'color': '#1f2328'}},
      {selector: 'node.grp.outside', style: {'border-style': 'dashed', 'background-color': '#fffaf5'}},
      {selector: 'edge', style: {
        'width': 'data(width)', 'curve-style': 'bezier', 'line-color': '#8c959f',
        'target-arrow-shape': 'triangle', 'target-arrow-color': '#8c959f', 'arrow-scale': 0.9,
        'opacity': 0.85, 'control-point-step-size': 24, 'loop-direction': '0deg',
        'loop-sweep': '-50deg'}},
      {selector: 'edge.denied', style: {
        'line-color': '#cf222e', 'target-arrow-color': '#cf222e', 'line-style': 'dashed',
        'line-dash-pattern': [6, 4]}},
      {selector: '.faded', style: {'opacity': 0.12}},
      {selector: 'node.hit', style: {'border-color': '#cf222e', 'border-width': 3}},
      {selector: 'edge.hit', style: {'width': 4, 'opacity': 1}}
    ]
  });

  // fCoSE starts from random positions: a seeded generator makes the drawing reproducible.
  function seeded(seed) {
    return function () {
      seed = (seed + 0x6D2B79F5) | 0;
      var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  var random = Math.random;
  Math.random = seeded(20240611);
  try {
    cy.layout({
      name: typeof cytoscapeFcose === 'function' ? 'fcose' : 'grid',
      // 'proof' refines longer: worth it up to a few hundred nodes
      quality: data.nodes.length > 400 ? 'default' : 'proof',
      randomize: true, animate: false, fit: false,
      nodeDimensionsIncludeLabels: true, packComponents: true, uniformNodeDimensions: false,
      nodeRepulsion: 9000, idealEdgeLength: 80, edgeElasticity: 0.3, nestingFactor: 0.1,
      gravity: 0.3, gravityCompound: 1.2, gravityRangeCompound: 1.5, numIter: 3000,
      tile: true, tilingPaddingVertical: 14, tilingPaddingHorizontal: 14
    }).run();
  } finally {
    Math.random = random;
  }

  // fCoSE does not promise that boxes never overlap (busy graphs with many edges between
  // namespaces do overlap): boxes that still do are pushed apart along the axis of least
  // overlap, first the nodes inside each box, then the boxes with everything in them.
  function separate(items, gap, move) {
    var boxes = items.map(function (n) { return n.boundingBox({includeLabels: true}); });
    var moved = false;
    for (var i = 0; i < boxes.length; i++) {
      for (var j = i + 1; j < boxes.length; j++) {
        var a = boxes[i], b = boxes[j];
        var ox = Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1) + gap;
        var oy = Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1) + gap;
        if (ox <= 0 || oy <= 0) { continue; }
        var d = {x: 0, y: 0};
        if (ox < oy) {
          d.x = (a.x1 + a.x2 <= b.x1 + b.x2 ? -ox : ox) / 2;
        } else {
          d.y = (a.y1 + a.y2 <= b.y1 + b.y2 ? -oy : oy) / 2;
        }
        move(items[i], d.x, d.y);
        move(items[j], -d.x, -d.y);
        [[a, 1], [b, -1]].forEach(function (p) {
          p[0].x1 += p[1] * d.x; p[0].x2 += p[1] * d.x;
          p[0].y1 += p[1] * d.y; p[0].y2 += p[1] * d.y;
        });
        moved = true;
      }
    }
    return moved;
  }
  function shift(n, dx, dy) {
    var leaves = n.isParent() ? n.descendants().filter(function (c) { return !c.isParent(); }) : n;
    leaves.forEach(function (c) { var p = c.position(); c.position({x: p.x + dx, y: p.y + dy}); });
  }
  function overlapping(items) {
    var boxes = items.map(function (n) { return n.boundingBox({includeLabels: true}); });
    for (var i = 0; i < boxes.length; i++) {
      for (var j = i + 1; j < boxes.length; j++) {
        var a = boxes[i], b = boxes[j];
        if (a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2) { return true; }
      }
    }
    return false;
  }
  // Boxes that pushing did not separate (many boxes crowding one spot) are packed in rows in
  // their reading order (top to bottom, left to right), each keeping its own drawing inside.
  function pack(items, gap) {
    var boxes = items.map(function (n) { return n.boundingBox({includeLabels: true}); });
    var order = boxes.map(function (b, i) { return i; });
    order.sort(function (i, j) {
      return boxes[i].y1 - boxes[j].y1 || boxes[i].x1 - boxes[j].x1 || i - j;
    });
    var area = 0, widest = 0, x0 = Infinity, y0 = Infinity;
    boxes.forEach(function (b) {
      area += (b.w + gap) * (b.h + gap);
      widest = Math.max(widest, b.w);
      x0 = Math.min(x0, b.x1);
      y0 = Math.min(y0, b.y1);
    });
    var width = Math.max(widest, Math.sqrt(area) * 1.5);
    var x = x0, y = y0, row = 0;
    order.forEach(function (i) {
      var b = boxes[i];
      if (x > x0 && x + b.w > x0 + width) { x = x0; y += row + gap; row = 0; }
      shift(items[i], x - b.x1, y - b.y1);
      x += b.w + gap;
      row = Math.max(row, b.h);
    });
  }
  var groups = cy.nodes().filter(function (n) { return n.isParent(); }).toArray();
  var orphans = cy.nodes().filter(function (n) { return !n.isParent() && !n.isChild(); });
  var top = groups.concat(orphans.toArray());
  for (var round = 0; round < 60; round++) {
    var moved = false;
    groups.forEach(function (g) { moved = separate(g.children().toArray(), 8, shift) || moved; });
    moved = separate(top, 18, shift) || moved;
    if (!moved) { break; }
  }
  var packed = 0;
  groups.forEach(function (g) {
    var children = g.children().toArray();
    if (overlapping(children)) { pack(children, 8); packed++; }
  });
  if (overlapping(top)) { pack(top, 18); packed++; }
  root.setAttribute('data-separation-rounds', String(round));
  root.setAttribute('data-packed', String(packed));

  function fit() {
    cy.fit(undefined, 24);
    if (cy.zoom() > 1.6) { cy.zoom(1.6); cy.center(); }
  }
  fit();

  function clear() {
    cy.elements().removeClass('faded hit');
    tip.style.display = 'none';
  }

  function add(parent, tag, text, cls) {
    var el = document.createElement(tag);
    if (text !== undefined) { el.textContent = text; }
    if (cls) { el.className = cls; }
    parent.appendChild(el);
    return el;
  }

  function edgeInfo(e) { return data.edges[Number(e.id().slice(1))]; }
  function name(id) { var n = byId[id]; return n ? n.label : id; }

  function describe(e) {
    var info = edgeInfo(e);
    return (info.denied ? 'DENIED ' : '') + name(info.source) + ' \u2192 ' + name(info.target) +
      ': ' + info.ports.join(', ') + ' (' + info.connections.toLocaleString('en') +
      ' connection' + (info.connections === 1 ? '' : 's') + ')';
  }

  function showNode(node) {
    var n = byId[node.id()];
    details.textContent = '';
    add(details, 'h2', n.label);
    var dl = add(details, 'dl');
    Object.keys(n.attrs).sort().forEach(function (k) {
      var v = n.attrs[k];
      add(dl, 'dt', k);
      add(dl, 'dd', typeof v === 'string' ? v : JSON.stringify(v));
    });
    var edges = node.connectedEdges().toArray().map(edgeInfo);
    edges.sort(function (a, b) { return b.connections - a.connections || (a.id < b.id ? -1 : 1); });
    add(details, 'h2', edges.length + ' edge' + (edges.length === 1 ? '' : 's'));
    if (!edges.length) { return; }
    var table = add(details, 'table');
    table.className = 'rg-edges';
    var head = add(add(table, 'thead'), 'tr');
    ['', 'peer', 'ports', 'connections'].forEach(function (h) { add(head, 'th', h); });
    var body = add(table, 'tbody');
    edges.forEach(function (info) {
      var out = info.source === n.id;
      var peer = out ? info.target : info.source;
      var tr = add(body, 'tr', undefined, info.denied ? 'denied' : '');
      add(tr, 'td', info.source === info.target ? '\u21ba' : (out ? '\u2192' : '\u2190'));
      add(tr, 'td', name(peer) + (info.denied ? ' (denied)' : ''));
      add(tr, 'td', info.ports.join(', '));
      add(tr, 'td', info.connections.toLocaleString('en'), 'num');
    });
  }

  function select(node) {
    clear();
    var near = node.closedNeighborhood();
    cy.elements().not(near).not(near.ancestors()).addClass('faded');
    node.addClass('hit');
    showNode(node);
  }

  cy.on('tap', 'node', function (evt) {
    if (evt.target.isParent()) { return; }
    select(evt.target);
  });
  cy.on('tap', 'edge', function (evt) {
    clear();
    evt.target.addClass('hit');
    details.textContent = '';
    add(details, 'h2', 'Edge');
    add(details, 'p', describe(evt.target));
  });
  cy.on('tap', function (evt) { if (evt.target === cy) { clear(); details.textContent = ''; } });

  function showTip(text, pos) {
    tip.textContent = text;
    tip.style.display = 'block';
    var x = Math.min(pos.x + 12, view.clientWidth - tip.offsetWidth - 4);
    tip.style.left = Math.max(0, x) + 'px';
    tip.style.top = (pos.y + 12) + 'px';
  }
  cy.on('mouseover', 'edge', function (evt) { showTip(describe(evt.target), evt.renderedPosition); });
  cy.on('mouseover', 'node', function (evt) {
    var n = byId[evt.target.id()];
    showTip(n ? n.title : evt.target.data('label'), evt.renderedPosition);
  });
  cy.on('mouseout', 'node, edge', function () { tip.style.display = 'none'; });

  var q = root.querySelector('.rg-search');
  q.addEventListener('input', function () {
    var text = q.value.toLowerCase();
    clear();
    if (!text) { return; }
    cy.nodes().not('.grp').forEach(function (node) {
      var n = byId[node.id()];
      var hay = (n.key + ' ' + n.label + ' ' + JSON.stringify(n.attrs.labels || {})).toLowerCase();
      node.addClass(hay.indexOf(text) >= 0 ? 'hit' : 'faded');
    });
  });
  root.querySelector('.rg-fit').addEventListener('click', fit);
  root.querySelector('.rg-clear').addEventListener('click', function () {
    clear(); details.textContent = ''; q.value = '';
  });
  var m = /^#node=(.+)$/.exec(location.hash);
  if (m) {
    var key = m[1];
    try { key = decodeURIComponent(key); } catch (e) { /* a malformed address: as written */ }
    data.nodes.forEach(function (n) { if (n.key === key) { select(cy.getElementById(n.id)); } });
  }
  window.recommenderGraph = cy;
  root.setAttribute('data-ready', '1');
}());
