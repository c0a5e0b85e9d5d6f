// The flame graph of the profile pages: an icicle (callers above callees) drawn on a canvas.
// The data comes from the page (<script id="flame-data" type="application/json">), built by
// scraper/profile_view.py: nested [name index, total, self, (base total,) children] lists.
// Click a frame to zoom into it, click a frame above it (or "reset zoom") to zoom out; the search
// box highlights matching frames and says their share of the total; hover shows exact values.
(function () {
  "use strict";

  const ROW = 18;
  const data = JSON.parse(document.getElementById("flame-data").textContent);
  const canvas = document.getElementById("flame");
  const tooltip = document.getElementById("flame-tooltip");
  const zoomText = document.getElementById("flame-zoom");
  const searchBox = document.getElementById("flame-search");
  const searchText = document.getElementById("flame-search-result");
  const resetButton = document.getElementById("flame-reset");
  const names = data.names;
  const diff = data.diff;

  // Nodes as objects with parent links, built once.
  function build(list, parent, depth) {
    const node = {
      name: names[list[0]], total: list[1], self: list[2],
      base: diff ? list[3] : 0, parent: parent, depth: depth, children: [],
    };
    for (const child of list[diff ? 4 : 3]) node.children.push(build(child, node, depth + 1));
    return node;
  }
  const root = build(data.tree, null, 0);
  let maxDepth = 0;
  (function measure(n) { maxDepth = Math.max(maxDepth, n.depth); n.children.forEach(measure); })(root);

  // A diff weighs both profiles equally: a frame's width is the mean of its shares of each.
  function weight(n) {
    if (!diff) return n.total;
    const t = root.total ? n.total / root.total : 0;
    const b = root.base ? n.base / root.base : 0;
    return (t + b) / 2;
  }

  let zoomed = root;
  let query = "";
  let rects = []; // {node, x, y, w} in CSS pixels, as drawn

  // --- units, as scraper/flame.py's format_value writes them
  const BYTES = [["B", 1], ["KiB", 1024], ["MiB", 1048576], ["GiB", 1073741824], ["TiB", 1099511627776]];
  const TIME = [["ns", 1], ["µs", 1e3], ["ms", 1e6], ["s", 1e9], ["min", 6e10], ["h", 3.6e12]];
  const COUNT = [["", 1], ["k", 1e3], ["M", 1e6], ["G", 1e9], ["T", 1e12]];
  const TO_NS = { nanoseconds: 1, microseconds: 1e3, milliseconds: 1e6, seconds: 1e9 };
  function scaled(value, scales, space) {
    let [suffix, factor] = scales[0];
    for (const [s, f] of scales) if (Math.abs(value) >= f) { suffix = s; factor = f; }
    const v = value / factor;
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    const number = factor === 1 && Number.isInteger(value) ? String(value) : v.toFixed(digits);
    return suffix ? number + space + suffix : number;
  }
  function format(value) {
    const unit = data.unit;
    if (unit === "bytes") return scaled(value, BYTES, " ");
    if (unit in TO_NS) return scaled(value * TO_NS[unit], TIME, " ");
    const text = scaled(value, COUNT, "");
    return unit === "count" || unit === "" ? text : text + " " + unit;
  }
  function percent(part, whole) { return whole ? (100 * part / whole).toFixed(2) + "%" : "-"; }

  // --- colours: warm by package for a profile; red (grew) to green (shrank) for a diff
  function hash(text) {
    let h = 0;
    for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
    return Math.abs(h);
  }
  function packageOf(name) {
    const slash = name.lastIndexOf("/");
    const dot = name.indexOf(".", slash + 1);
    return dot > 0 ? name.slice(0, dot) : name;
  }
  function colour(n) {
    if (query && matches(n)) return "#b84dff";
    if (diff) {
      const t = root.total ? n.total / root.total : 0;
      const b = root.base ? n.base / root.base : 0;
      const r = Math.max(t, b) ? (t - b) / Math.max(t, b) : 0; // -1 gone .. +1 new
      const strength = Math.round(Math.min(1, Math.abs(r)) * 160);
      const faded = query ? 0.35 : 1;
      return r >= 0
        ? `rgba(${230}, ${220 - strength}, ${220 - strength}, ${faded})`
        : `rgba(${220 - strength}, ${230}, ${220 - strength}, ${faded})`;
    }
    const h = hash(packageOf(n.name));
    const alpha = query ? 0.35 : 1;
    return `hsla(${20 + (h % 35)}, ${70 + (h % 20)}%, ${58 + (h % 14)}%, ${alpha})`;
  }
  function matches(n) { return n.name.toLowerCase().includes(query); }

  // --- layout and drawing
  function draw() {
    const width = canvas.parentElement.clientWidth;
    const ancestors = [];
    for (let a = zoomed.parent; a; a = a.parent) ancestors.unshift(a);
    const height = (maxDepth + 1) * ROW + 2;
    const ratio = window.devicePixelRatio || 1;
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px ui-monospace, SFMono-Regular, Menlo, monospace";
    ctx.textBaseline = "middle";
    rects = [];
    // ancestors of the zoomed frame span the width, so the way back out stays visible
    for (const a of ancestors) box(ctx, a, 0, width);
    const scale = weight(zoomed) ? width / weight(zoomed) : 0;
    (function lay(n, x) {
      const w = weight(n) * scale;
      if (w < 0.5) return;
      box(ctx, n, x, w);
      let cx = x;
      for (const c of n.children) { lay(c, cx); cx += weight(c) * scale; }
    })(zoomed, 0);
    canvas.dataset.frames = String(rects.length);
    canvas.dataset.zoom = zoomed.name;
  }
  function box(ctx, n, x, w) {
    const y = n.depth * ROW;
    ctx.fillStyle = colour(n);
    ctx.fillRect(x, y, Math.max(w - 1, 0.5), ROW - 1);
    if (w > 28) {
      ctx.fillStyle = query && !matches(n) ? "#8a939b" : "#1d2125";
      const room = Math.floor((w - 6) / 7.2);
      const label = n.name.length > room ? n.name.slice(0, Math.max(room - 1, 1)) + "…" : n.name;
      ctx.fillText(label, x + 3, y + ROW / 2);
    }
    rects.push({ node: n, x: x, y: y, w: w });
  }
  function at(x, y) {
    for (let i = rects.length - 1; i >= 0; i--) {
      const r = rects[i];
      if (x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + ROW) return r.node;
    }
    return null;
  }

  // --- interaction
  function describeZoom() {
    if (zoomed === root) {
      zoomText.textContent = "Click a frame to zoom into it.";
      resetButton.disabled = true;
    } else {
      const share = diff ? percent(zoomed.total, root.total) + " of the newer profile"
                         : percent(zoomed.total, root.total) + " of the total";
      zoomText.textContent = `Zoomed into ${zoomed.name} (${format(zoomed.total)}, ${share}); click a frame above it or reset to zoom out.`;
      resetButton.disabled = false;
    }
  }
  function zoom(n) { zoomed = n; describeZoom(); draw(); }

  function search() {
    query = searchBox.value.trim().toLowerCase();
    if (!query) { searchText.textContent = ""; draw(); return; }
    // A frame counts once, with the matches below it inside its total.
    let total = 0, base = 0;
    const functions = new Set();
    (function walk(n, inside) {
      const hit = n !== root && matches(n);
      if (hit) functions.add(n.name);
      if (hit && !inside) { total += n.total; base += n.base; }
      for (const c of n.children) walk(c, inside || hit);
    })(root, false);
    if (!functions.size) {
      searchText.textContent = `No frame matches “${searchBox.value.trim()}”.`;
    } else {
      let text = `${functions.size} function${functions.size === 1 ? "" : "s"} match: ${format(total)}, ${percent(total, root.total)} of the total`;
      if (diff) text += ` (was ${format(base)}, ${percent(base, root.base)})`;
      searchText.textContent = text + ".";
    }
    draw();
  }

  function showTooltip(event, n) {
    const lines = [n.name];
    if (diff) {
      lines.push(`before: ${format(n.base)} (${percent(n.base, root.base)})`);
      lines.push(`after: ${format(n.total)} (${percent(n.total, root.total)})`);
      lines.push(`change: ${n.total - n.base >= 0 ? "+" : ""}${format(n.total - n.base)}`);
    } else {
      lines.push(`total: ${format(n.total)} (${percent(n.total, root.total)})`);
      lines.push(`self: ${format(n.self)} (${percent(n.self, root.total)})`);
    }
    tooltip.textContent = lines.join("\n");
    tooltip.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    tooltip.style.left = x + window.scrollX + "px";
    tooltip.style.top = event.clientY + 14 + window.scrollY + "px";
  }

  function position(event) {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }
  canvas.addEventListener("click", (event) => {
    const n = at(...position(event));
    if (n) zoom(n);
  });
  canvas.addEventListener("mousemove", (event) => {
    const n = at(...position(event));
    if (n) showTooltip(event, n); else tooltip.hidden = true;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });
  resetButton.addEventListener("click", () => zoom(root));
  searchBox.addEventListener("input", search);
  for (const cell of document.querySelectorAll("[data-function]")) {
    cell.addEventListener("click", () => { searchBox.value = cell.dataset.function; search(); });
  }
  window.addEventListener("resize", draw);

  // Where a frame is drawn (its middle, in page pixels): for scripts and tests driving the page.
  window.flameGraph = {
    locate(name) {
      const r = rects.find((r) => r.node.name === name);
      if (!r) return null;
      const box = canvas.getBoundingClientRect();
      return { x: box.left + window.scrollX + r.x + r.w / 2, y: box.top + window.scrollY + r.y + ROW / 2 };
    },
  };

  describeZoom();
  if (searchBox.value) search(); else draw();
})();
