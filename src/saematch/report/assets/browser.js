/* saematch pair browser: hash-routed views over the JSON embedded in this page (no network). */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("saematch-data").textContent);
  var app = document.getElementById("app");
  var C = {};
  D.pcols.forEach(function (c, i) { C[c] = i; });
  var HELD = D.meta.sort_col === "corr_test";
  var KEY = C[D.meta.sort_col];
  var HAS_UNIV = D.meta.has_universal;
  var PAGE = D.meta.cfg.page_size;
  var lpById = {};
  D.lps.forEach(function (lp, i) { lp.i = i; lpById[lp.id] = lp; });
  var state = { readout: null, filters: {} };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function markUnit(s) { return esc(s).replace(/«([^»]*)»/g, "<mark>$1</mark>"); }
  function fmt(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d); }
  function pct(f) { return f === null || f === undefined ? "–" : (f * 100).toPrecision(2) + "%"; }
  function h(id, parts) { return "#" + [id].concat(parts.map(function (p) { return encodeURIComponent(p); })).join("/"); }
  function lpLabel(lp) { return esc(lp.ma) + " L" + lp.la + " ↔ " + esc(lp.mb) + " L" + lp.lb; }
  function card(model, layer, f) {
    var m = D.cards[model], l = m && m[layer];
    return (l && l[f]) || null;
  }
  var textCache = {};
  function cardText(model, layer, f) {
    var k = model + "|" + layer + "|" + f;
    if (!(k in textCache)) {
      var c = card(model, layer, f);
      textCache[k] = c ? c[3].join("\n").replace(/[«»]/g, "").toLowerCase() : "";
    }
    return textCache[k];
  }
  var index = null; /* "model|layer|feature" -> [[lp, row, side]] over every embedded pair */
  function partners(model, layer, f) {
    if (!index) {
      index = {};
      D.lps.forEach(function (lp) {
        lp.rows.forEach(function (r) {
          [[lp.ma, lp.la, r[0], 0], [lp.mb, lp.lb, r[1], 1]].forEach(function (s) {
            var k = s[0] + "|" + s[1] + "|" + s[2];
            (index[k] = index[k] || []).push([lp, r, s[3]]);
          });
        });
      });
    }
    return index[model + "|" + layer + "|" + f] || [];
  }
  function flagsHtml(fl) {
    var out = [];
    if (fl & D.flags.universal) out.push('<span class="flag univ">universal</span>');
    if (fl & (D.flags.dense_a | D.flags.dense_b)) out.push('<span class="flag">dense</span>');
    if (fl & D.flags.punctuation) out.push('<span class="flag">punct</span>');
    if (fl & D.flags.below_min_corr) out.push('<span class="flag">below min</span>');
    return out.join("");
  }
  function corrHeads() {
    return HELD ? "<th>held-out corr</th><th>train corr</th>" : "<th>corr</th>";
  }
  function corrCells(r) {
    if (!HELD) return '<td class="num">' + fmt(r[C.correlation]) + "</td>";
    var train = C.corr_train !== undefined ? r[C.corr_train] : r[C.correlation];
    return '<td class="num"><b>' + fmt(r[C.corr_test]) + '</b></td><td class="num">' + fmt(train) + "</td>";
  }
  function firstCtx(model, layer, f) {
    var c = card(model, layer, f);
    return c && c[3].length ? markUnit(c[3][0]) : '<span class="muted">no card</span>';
  }

  /* ---- grid ---- */
  function colour(t) {
    var a = [247, 251, 255], b = [8, 48, 107];
    var c = a.map(function (x, i) { return Math.round(x + (b[i] - x) * t); });
    return "rgb(" + c.join(",") + ")";
  }
  function gridTable(g) {
    var la = [], lb = [], cell = {}, vals = [];
    g.cells.forEach(function (c) {
      if (la.indexOf(c[0]) < 0) la.push(c[0]);
      if (lb.indexOf(c[1]) < 0) lb.push(c[1]);
      cell[c[0] + "," + c[1]] = c;
      if (c[2] !== null) vals.push(c[2]);
    });
    la.sort(function (x, y) { return x - y; }); lb.sort(function (x, y) { return x - y; });
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    var lps = {};
    D.lps.forEach(function (lp) { if (lp.ma === g.ma && lp.mb === g.mb) lps[lp.la + "," + lp.lb] = lp; });
    var s = '<figure><table class="grid"><tr><th>' + esc(g.ma) + " \\ " + esc(g.mb) + "</th>";
    lb.forEach(function (b) { s += "<th>L" + b + "</th>"; });
    s += "</tr>";
    la.forEach(function (a) {
      s += "<tr><th>L" + a + "</th>";
      lb.forEach(function (b) {
        var c = cell[a + "," + b], lp = lps[a + "," + b];
        if (!c) { s += "<td></td>"; return; }
        var t = c[2] === null || hi === lo ? 0 : (c[2] - lo) / (hi - lo);
        if (!g.hi) t = 1 - t;
        var p = c[3], ns = p !== null && p >= 0.05;
        var tip = g.value + " " + fmt(c[2]) + (p !== null ? ", p = " + fmt(p) : "");
        Object.keys(c[4]).forEach(function (k) { tip += ", " + k + " " + fmt(c[4][k]); });
        if (lp) tip += "; " + lp.n + " pairs, " + lp.nk + " kept";
        s += '<td class="cell' + (lp ? "" : " nolink") + (ns ? " ns" : "") + '"' + (lp ? ' data-lp="' + esc(lp.id) + '"' : "") +
          ' title="' + esc(tip) + '" style="background:' + colour(t) + ";color:" + (t > 0.55 ? "#fff" : "#111") + '">' +
          fmt(c[2], 2) + (p !== null && p < 0.05 ? "*" : "") + "</td>";
      });
      s += "</tr>";
    });
    var withP = g.cells.some(function (c) { return c[3] !== null; });
    s += "</table><figcaption>" + esc(g.value) + " of " + esc(g.readout) + " for " + g.cells.length + " layer pairs: rows are " +
      esc(g.ma) + " layers, columns " + esc(g.mb) + " layers; darker is " + (g.hi ? "higher" : "lower (more similar)") + "." +
      (withP ? " * beats its permutation null (p < 0.05); faded cells do not." : "") +
      " Click a cell to browse its pairs.</figcaption></figure>";
    return s;
  }
  function viewGrid() {
    var readouts = [];
    D.grids.forEach(function (g) { if (readouts.indexOf(g.readout) < 0) readouts.push(g.readout); });
    if (readouts.indexOf(state.readout) < 0) state.readout = readouts[0];
    var s = "<h1>Layer × layer grid</h1><p>Readout: <select id=\"readout\">" + readouts.map(function (r) {
      return "<option" + (r === state.readout ? " selected" : "") + ">" + esc(r) + "</option>";
    }).join("") + "</select></p><div class=\"grids\">";
    D.grids.forEach(function (g) { if (g.readout === state.readout) s += gridTable(g); });
    app.innerHTML = s + "</div>";
    document.getElementById("readout").onchange = function (e) { state.readout = e.target.value; viewGrid(); };
  }

  /* ---- one layer pair ---- */
  function filtersOf(id) {
    return state.filters[id] || (state.filters[id] = { min: -1, dense: true, punct: true, below: false, univ: "all", word: "", page: 0 });
  }
  function passes(lp, r, f) {
    var v = r[KEY], fl = r[C.flags];
    if (f.min > -1 && (v === null || v < f.min)) return false;
    if (f.dense && fl & (D.flags.dense_a | D.flags.dense_b)) return false;
    if (f.punct && fl & D.flags.punctuation) return false;
    if (f.below && fl & D.flags.below_min_corr) return false;
    if (f.univ === "yes" && !(fl & D.flags.universal)) return false;
    if (f.univ === "no" && fl & D.flags.universal) return false;
    if (f.word) {
      var w = f.word.toLowerCase();
      if (cardText(lp.ma, lp.la, r[0]).indexOf(w) < 0 && cardText(lp.mb, lp.lb, r[1]).indexOf(w) < 0) return false;
    }
    return true;
  }
  function pairRow(lp, r, withLp) {
    return '<tr class="pair-row" data-href="' + h("pair", [lp.id, r[0], r[1]]) + '">' +
      (withLp ? "<td>" + lpLabel(lp) + "</td>" : "") +
      '<td><a href="' + h("feat", [lp.ma, lp.la, r[0]]) + '">A #' + r[0] + "</a></td>" +
      '<td><a href="' + h("feat", [lp.mb, lp.lb, r[1]]) + '">B #' + r[1] + "</a></td>" +
      corrCells(r) + "<td>" + flagsHtml(r[C.flags]) + '</td><td class="ctx">' + firstCtx(lp.ma, lp.la, r[0]) +
      '</td><td class="ctx">' + firstCtx(lp.mb, lp.lb, r[1]) + "</td></tr>";
  }
  function pairTable(rows, withLp) {
    return '<table class="pairs"><tr>' + (withLp ? "<th>layer pair</th>" : "") + "<th>feature A</th><th>feature B</th>" +
      corrHeads() + "<th>flags</th><th>top context A</th><th>top context B</th></tr>" +
      rows.map(function (x) { return pairRow(x[0], x[1], withLp); }).join("") + "</table>";
  }
  function renderPairs(lp) {
    var f = filtersOf(lp.id);
    var rows = lp.rows.filter(function (r) { return passes(lp, r, f); });
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    f.page = Math.min(f.page, pages - 1);
    var lo = f.page * PAGE, shown = rows.slice(lo, lo + PAGE);
    document.getElementById("pairs-body").innerHTML =
      '<div class="pager"><button id="prev"' + (f.page ? "" : " disabled") + '>‹ prev</button><span>rows ' +
      (rows.length ? lo + 1 : 0) + "–" + (lo + shown.length) + " of " + rows.length + " shown by the filters (of " + lp.ne +
      ' embedded)</span><button id="next"' + (f.page < pages - 1 ? "" : " disabled") + ">next ›</button></div>" +
      pairTable(shown.map(function (r) { return [lp, r]; }), false);
    document.getElementById("prev").onclick = function () { f.page--; renderPairs(lp); };
    document.getElementById("next").onclick = function () { f.page++; renderPairs(lp); };
  }
  function viewLayerPair(id) {
    var lp = lpById[id];
    if (!lp) { app.innerHTML = "<p>Unknown layer pair " + esc(id) + ".</p>"; return; }
    var f = filtersOf(id);
    app.innerHTML = '<p class="crumbs"><a href="#grid">grid</a> › ' + lpLabel(lp) + "</p><h1>" + lpLabel(lp) + "</h1>" +
      '<p class="stats"><span><b>' + lp.n.toLocaleString() + "</b> matched pairs</span><span><b>" + lp.nk.toLocaleString() +
      "</b> kept</span><span>mean " + esc(D.meta.sort_label) + " of kept pairs <b>" + fmt(lp.mean_kept) + "</b></span><span><b>" +
      lp.ne + "</b> embedded, sorted by " + esc(D.meta.sort_label) + "</span></p>" +
      '<div class="filters"><label>min ' + esc(D.meta.sort_label) + ' <input id="f-min" type="number" step="0.05" min="-1" max="1" value="' +
      f.min + '"></label><label><input id="f-dense" type="checkbox"' + (f.dense ? " checked" : "") + "> hide dense</label>" +
      '<label><input id="f-punct" type="checkbox"' + (f.punct ? " checked" : "") + "> hide punctuation-only</label>" +
      '<label><input id="f-below" type="checkbox"' + (f.below ? " checked" : "") + "> hide below min corr</label>" +
      (HAS_UNIV ? '<label>universal <select id="f-univ"><option value="all">all</option><option value="yes">only</option>' +
        '<option value="no">not</option></select></label>' : '<span class="muted">no universality column in this run</span>') +
      '<label>word <input id="f-word" type="search" placeholder="in either context" value="' + esc(f.word) + '"></label></div>' +
      '<div id="pairs-body"></div>';
    var bind = function (el, key, get) {
      var node = document.getElementById(el);
      if (!node) return;
      if (key === "univ") node.value = f.univ;
      node.oninput = node.onchange = function () {
        var v = get(node);
        if (v === f[key]) return; /* a blur's change event must not rebuild the rows under a click */
        f[key] = v; f.page = 0; renderPairs(lp);
      };
    };
    bind("f-min", "min", function (n) { var v = parseFloat(n.value); return isNaN(v) ? -1 : v; });
    bind("f-dense", "dense", function (n) { return n.checked; });
    bind("f-punct", "punct", function (n) { return n.checked; });
    bind("f-below", "below", function (n) { return n.checked; });
    bind("f-univ", "univ", function (n) { return n.value; });
    bind("f-word", "word", function (n) { return n.value.trim(); });
    renderPairs(lp);
  }

  /* ---- one pair, one feature ---- */
  function histSvg(hist, max) {
    if (!hist) return '<p class="muted">no activation histogram</p>';
    var W = 240, H = 56, n = hist.length, bw = W / n, top = Math.log1p(Math.max.apply(null, hist)) || 1;
    var s = '<svg class="hist" width="' + W + '" height="' + (H + 14) + '" role="img" aria-label="activation histogram">';
    hist.forEach(function (c, i) {
      var bh = Math.log1p(c) / top * H;
      s += '<rect x="' + (i * bw + 0.5) + '" y="' + (H - bh) + '" width="' + (bw - 1) + '" height="' + bh + '"><title>' +
        fmt(i * max / n, 2) + "–" + fmt((i + 1) * max / n, 2) + ": " + c + " units</title></rect>";
    });
    return s + '<text x="0" y="' + (H + 12) + '">0</text><text x="' + W + '" y="' + (H + 12) + '" text-anchor="end">' +
      fmt(max, 2) + "</text></svg>";
  }
  function cardHtml(model, layer, f) {
    var c = card(model, layer, f);
    if (!c) return '<p class="muted">No card embedded for this feature.</p>';
    var n = c[2] ? c[2].reduce(function (a, b) { return a + b; }, 0) : null;
    return '<p class="stats"><span>fires on <b>' + pct(c[0]) + "</b> of units</span><span>max activation <b>" + fmt(c[1], 2) +
      "</b></span></p>" + histSvg(c[2], c[1]) +
      '<p class="muted" style="font-size:12px">Activations where it fires' + (n !== null ? " (" + n.toLocaleString() + " units)" : "") +
      ", " + (c[2] ? c[2].length : 0) + " bins from 0 to max; bar height is log count.</p><ol>" +
      c[3].map(function (x) { return '<li class="ctx">' + markUnit(x) + "</li>"; }).join("") + "</ol>";
  }
  function partnerList(model, layer, f, skip) {
    var ps = partners(model, layer, f).filter(function (p) { return p[0] !== skip; });
    if (!ps.length) return '<p class="muted">No partners at other embedded layer pairs.</p>';
    return "<ul>" + ps.map(function (p) {
      var lp = p[0], r = p[1], other = p[2] === 0 ? "B #" + r[1] : "A #" + r[0];
      return '<li><a href="' + h("pair", [lp.id, r[0], r[1]]) + '">' + lpLabel(lp) + ": " + other + "</a> (" +
        esc(D.meta.sort_label) + " " + fmt(r[KEY]) + ")</li>";
    }).join("") + "</ul>";
  }
  function side(label, model, layer, f, skip) {
    return '<section class="side"><h2>' + label + ' · <a href="' + h("feat", [model, layer, f]) + '">' + esc(model) + " L" + layer +
      " #" + f + "</a></h2>" + cardHtml(model, layer, f) + "<h3>Partners at other layer pairs</h3>" +
      partnerList(model, layer, f, skip) + "</section>";
  }
  function viewPair(id, fa, fb) {
    var lp = lpById[id];
    var r = lp && lp.rows.filter(function (x) { return x[0] === fa && x[1] === fb; })[0];
    if (!r) { app.innerHTML = "<p>Pair " + esc(id) + " A #" + fa + " / B #" + fb + " is not embedded in this page.</p>"; return; }
    var extra = ["twin_corr_a", "twin_corr_b"].filter(function (c) { return C[c] !== undefined; });
    var train = C.corr_train !== undefined ? r[C.corr_train] : r[C.correlation];
    app.innerHTML = '<div id="pair-view"><p class="crumbs"><a href="#grid">grid</a> › <a href="' + h("lp", [id]) + '">' +
      lpLabel(lp) + "</a> › A #" + fa + " ↔ B #" + fb + "</p><h1>A #" + fa + " ↔ B #" + fb + "</h1>" +
      '<p class="stats">' + (HELD ? "<span>held-out corr <b>" + fmt(r[C.corr_test]) + "</b></span><span>train corr <b>" +
        fmt(train) + "</b></span>" : "<span>correlation <b>" + fmt(r[C.correlation]) + "</b></span>") +
      extra.map(function (c) { return "<span>" + c.replace(/_/g, " ") + " <b>" + fmt(r[C[c]]) + "</b></span>"; }).join("") +
      "<span>" + flagsHtml(r[C.flags]) + "</span></p>" +
      '<div class="sides">' + side("A", lp.ma, lp.la, fa, lp) + side("B", lp.mb, lp.lb, fb, lp) + "</div></div>";
  }
  function viewFeature(model, layer, f) {
    var ps = partners(model, layer, f);
    app.innerHTML = '<p class="crumbs"><a href="#grid">grid</a> › feature</p><h1>' + esc(model) + " L" + layer + " #" + f + "</h1>" +
      '<section class="side">' + cardHtml(model, layer, f) + "</section><h2>Partners across layer pairs (" + ps.length + ")</h2>" +
      '<p class="muted">From the embedded pairs only (' + esc(D.meta.cap) + ")</p>" +
      pairTable(ps.map(function (p) { return [p[0], p[1]]; }), true);
  }
  function viewSearch(word) {
    var w = word.toLowerCase(), hits = [], n = 0;
    D.lps.forEach(function (lp) {
      lp.rows.forEach(function (r) {
        if (cardText(lp.ma, lp.la, r[0]).indexOf(w) >= 0 || cardText(lp.mb, lp.lb, r[1]).indexOf(w) >= 0) {
          n++;
          if (hits.length < 200) hits.push([lp, r]);
        }
      });
    });
    app.innerHTML = '<p class="crumbs"><a href="#grid">grid</a> › search</p><h1>Pairs with “' + esc(word) + "” in a context</h1><p>" +
      n + " embedded pairs match" + (n > hits.length ? "; the first " + hits.length + " are shown" : "") + ".</p>" +
      pairTable(hits, true);
  }

  /* ---- routing ---- */
  function route() {
    var parts = location.hash.replace(/^#/, "").split("/").map(decodeURIComponent);
    var v = parts[0] || "grid";
    if (v === "lp") viewLayerPair(parts[1]);
    else if (v === "pair") viewPair(parts[1], +parts[2], +parts[3]);
    else if (v === "feat") viewFeature(parts[1], parts[2], +parts[3]);
    else if (v === "search") viewSearch(parts.slice(1).join("/"));
    else { v = "grid"; viewGrid(); }
    document.body.setAttribute("data-view", v);
    window.scrollTo(0, 0);
  }
  app.addEventListener("click", function (e) {
    if (e.target.closest("a")) return;
    var cell = e.target.closest("td.cell[data-lp]");
    if (cell) { location.hash = h("lp", [cell.getAttribute("data-lp")]); return; }
    var row = e.target.closest("tr.pair-row");
    if (row) location.hash = row.getAttribute("data-href");
  });
  document.getElementById("search-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var w = document.getElementById("search").value.trim();
    if (w) location.hash = h("search", [w]);
  });
  document.getElementById("cap").textContent = D.meta.cap + (D.meta.notes.length ? " " + D.meta.notes.join("; ") + "." : "") +
    " Built " + D.meta.built + ".";
  window.addEventListener("hashchange", route);
  route();
  window.saematchReadyMs = performance.now();
})();
