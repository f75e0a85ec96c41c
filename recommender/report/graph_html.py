"""The communication graph as one interactive, self-contained HTML page.

The page is the SVG drawing of :mod:`recommender.report.graph_svg` plus a small inline script: drag
to pan, wheel or buttons to zoom, a search box that highlights matching nodes, and a click on a
node that highlights its edges and lists its attributes. There are no external resources: the
Content-Security-Policy allows only the page's own script (by its SHA-256) and inline styles.
The node attributes are embedded as JSON with ``<``, ``>`` and ``&`` escaped, so no flow data
can end the script element.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

import networkx as nx

from .graph_svg import layout_graph, render_svg, xml_text

__all__ = ["graph_html"]

_CSS: Final = """
body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#1f2328;display:flex;height:100vh}
#view{flex:1;overflow:hidden;position:relative;background:#fcfdfe;cursor:grab}
#view svg{position:absolute;left:0;top:0;transform-origin:0 0}
aside{width:320px;border-left:1px solid #d1d9e0;padding:10px 12px;overflow:auto}
h1{font-size:17px;margin:0 0 6px}
input{width:100%;padding:4px 6px;margin:6px 0}
button{margin:0 4px 6px 0}
dl{font-size:12px;word-break:break-all}dt{color:#59636e}dd{margin:0 0 4px}
.muted{color:#59636e;font-size:12px}
g.dim{opacity:.15}g.hit rect{stroke:#cf222e;stroke-width:3}
"""

_SCRIPT: Final = r"""
(function(){
var data=JSON.parse(document.getElementById('graph-data').textContent);
var view=document.getElementById('view'),svg=view.querySelector('svg');
var s=1,x=0,y=0,drag=null;
function apply(){svg.style.transform='translate('+x+'px,'+y+'px) scale('+s+')';}
function zoom(f,cx,cy){cx=cx||0;cy=cy||0;x=cx-(cx-x)*f;y=cy-(cy-y)*f;s*=f;apply();}
view.addEventListener('wheel',function(e){e.preventDefault();
 var r=view.getBoundingClientRect();zoom(e.deltaY<0?1.2:1/1.2,e.clientX-r.left,e.clientY-r.top);},
 {passive:false});
view.addEventListener('mousedown',function(e){drag=[e.clientX-x,e.clientY-y];});
window.addEventListener('mouseup',function(){drag=null;});
window.addEventListener('mousemove',function(e){if(drag){x=e.clientX-drag[0];
 y=e.clientY-drag[1];apply();}});
document.getElementById('zin').onclick=function(){zoom(1.25);};
document.getElementById('zout').onclick=function(){zoom(0.8);};
document.getElementById('fit').onclick=function(){
 var w=view.clientWidth/svg.width.baseVal.value,h=view.clientHeight/svg.height.baseVal.value;
 s=Math.min(1,w,h);x=0;y=0;apply();};
var nodes=svg.querySelectorAll('g.n'),edges=svg.querySelectorAll('g.e');
function clear(){nodes.forEach(function(g){g.classList.remove('dim','hit');});
 edges.forEach(function(g){g.classList.remove('dim');});}
function show(i){var d=data.nodes[i],dl=document.getElementById('details');
 dl.textContent='';Object.keys(d).forEach(function(k){var dt=document.createElement('dt');
 dt.textContent=k;var dd=document.createElement('dd');var v=d[k];
 dd.textContent=typeof v==='string'?v:JSON.stringify(v);dl.appendChild(dt);dl.appendChild(dd);});}
function select(i){clear();var near={};near[i]=1;
 edges.forEach(function(g){var a=g.getAttribute('data-s'),b=g.getAttribute('data-t');
  if(a==i||b==i){near[a]=1;near[b]=1;}else{g.classList.add('dim');}});
 nodes.forEach(function(g){var n=g.getAttribute('data-n');if(!near[n])g.classList.add('dim');
  if(n==i)g.classList.add('hit');});show(i);}
nodes.forEach(function(g){g.addEventListener('click',function(e){e.stopPropagation();
 select(g.getAttribute('data-n'));});});
document.getElementById('clear').onclick=clear;
document.getElementById('q').addEventListener('input',function(e){
 var q=e.target.value.toLowerCase();clear();if(!q)return;
 nodes.forEach(function(g){var d=data.nodes[g.getAttribute('data-n')];
 var t=(d.id+' '+(d.label||'')+' '+JSON.stringify(d.labels||{})).toLowerCase();
 g.classList.add(t.indexOf(q)>=0?'hit':'dim');});});
var h=/^#node=(\d+)$/.exec(location.hash);if(h)select(h[1]);
document.body.setAttribute('data-ready','1');
})();
"""


def _json_for_script(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def graph_html(
    graph: nx.MultiDiGraph,
    *,
    max_nodes: int | None = None,
    in_scope: Iterable[str] = (),
    segments: dict[str, str] | None = None,
    title: str = "Communication graph",
) -> str:
    """Render the graph as an interactive HTML page (see the module docstring).

    Parameters
    ----------
    graph
        A graph from :func:`recommender.build_graph`.
    max_nodes, in_scope
        As in :func:`recommender.report.graph_svg.layout_graph`.
    segments
        Optional proposed segment of each node id, listed with the node's attributes.
    title
        The page title.

    Returns
    -------
    str
        The page; the same graph gives the same text.
    """
    lay = layout_graph(graph, max_nodes=max_nodes, in_scope=in_scope)
    svg = render_svg(lay, standalone=False, segments=segments)
    nodes = []
    for n in sorted(lay.position):
        attrs = {k: v for k, v in lay.nodes[n].items() if v is not None}
        if segments and n in segments:
            attrs["segment"] = segments[n]
        nodes.append({"id": n, **attrs})
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    allowed = sum(1 for *_, d in graph.edges(data=True) if d.get("verdict") == "allowed")
    note = (
        f"{graph.number_of_nodes():,} nodes, {allowed:,} allowed and "
        f"{graph.number_of_edges() - allowed:,} denied edges"
    )
    if lay.hidden:
        note += f"; the drawing shows the {len(lay.position):,} busiest nodes"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        f"<title>{xml_text(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f'<div id="view">{svg}</div>',
        "<aside>",
        f"<h1>{xml_text(title)}</h1>",
        f'<p class="muted">{xml_text(note)}. Drag to pan, wheel to zoom, click a node for its '
        "edges and attributes.</p>",
        '<button id="zin" type="button">+</button><button id="zout" type="button">\u2212'
        '</button><button id="fit" type="button">fit</button>'
        '<button id="clear" type="button">clear</button>',
        '<input id="q" type="search" placeholder="search nodes, labels" aria-label="search">',
        '<dl id="details"></dl>',
        "</aside>",
        f'<script id="graph-data" type="application/json">{_json_for_script({"nodes": nodes})}'
        "</script>",
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
