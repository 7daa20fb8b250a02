// The review page. Every text from the ledger is set with textContent (never markup), so
// a prompt holding <script> shows as text. Writes carry the per-launch token from the
// URL's fragment (#token=…), which is never sent to a server on its own.
(function () {
  "use strict";
  var token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  var state = {data: null, variants: [], shown: [], selected: new Set(), focus: 0,
               open: null, zoom: 0};
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "className") { node.className = attrs[key]; }
      else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function say(text, isError) {
    var box = $("message");
    box.textContent = text;
    box.className = isError ? "error" : "";
    box.hidden = !text;
  }

  // ---------------------------------------------------------------- loading

  function load() {
    fetch("/api/run", {cache: "no-store"}).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.error || response.statusText); }
        return body;
      });
    }).then(function (data) {
      state.data = data;
      state.variants = data.variants;
      header(data);
      controls(data);
      render();
      if (!token) { say("no token in the URL: open the link campaign review printed to " +
                        "approve or reject", true); }
    }).catch(function (error) { say("cannot load the run: " + error.message, true); });
  }

  function definitions(list, entries) {
    list.replaceChildren();
    entries.forEach(function (entry) {
      list.appendChild(el("dt", {text: entry[0]}));
      list.appendChild(el("dd", {text: String(entry[1])}));
    });
  }

  function header(data) {
    var run = data.run;
    $("campaign").textContent = run.campaign;
    document.title = run.campaign + " · review";
    $("run-id").textContent = run.id;
    $("run-status").textContent = run.status;
    $("reviewer").textContent = data.reviewer;
    definitions($("counts"), [["planned", run.planned], ["shown", data.variants.length],
      ["passed", run.counts.passed], ["review", run.counts.review],
      ["failed", run.counts.failed]]);
    counts(run);
    var thresholds = Object.keys(data.thresholds).map(function (metric) {
      return [metric, data.thresholds[metric]];
    });
    definitions($("thresholds"), thresholds.length ? thresholds : [["thresholds", "none"]]);
  }

  function counts(run) {
    definitions($("reviews"), [["approved", run.reviews.approved],
      ["rejected", run.reviews.rejected], ["to review", run.reviews.to_review]]);
  }

  function controls(data) {
    var filters = $("axis-filters");
    if (!filters.childElementCount) {
      Object.keys(data.axes).forEach(function (axis) {
        var select = el("select", {"data-axis": axis}, [el("option", {value: "", text: "any"})]);
        data.axes[axis].forEach(function (value) {
          select.appendChild(el("option", {value: value, text: value}));
        });
        select.addEventListener("change", render);
        filters.appendChild(el("label", {text: axis + " "}, [select]));
      });
      var guideline = $("guideline-filter");
      Object.keys(data.thresholds).forEach(function (name) {
        guideline.appendChild(el("option", {value: name, text: name}));
      });
      var sort = $("sort");
      sort.appendChild(el("option", {value: "seed:1", text: "seed ↑"}));
      data.scores.forEach(function (name) {
        sort.appendChild(el("option", {value: name + ":1", text: name + " ↑"}));
        sort.appendChild(el("option", {value: name + ":-1", text: name + " ↓"}));
      });
    }
  }

  // ---------------------------------------------------------------- the grid

  function scoreOf(variant, name) {
    var render = variant.render;
    if (name === "seed") { return render.seed; }
    var scores = render.decision ? render.decision.scores : render.scores;
    return name in scores ? scores[name] : null;
  }

  function visible() {
    var status = $("status-filter").value, review = $("review-filter").value;
    var broke = $("guideline-filter").value;
    var axes = Array.prototype.map.call(document.querySelectorAll("#axis-filters select"),
      function (select) { return [select.getAttribute("data-axis"), select.value]; });
    var shown = state.variants.filter(function (variant) {
      var render = variant.render;
      if (status && render.status !== status) { return false; }
      if (review && render.review_state !== review) { return false; }
      if (broke && variant.broken.indexOf(broke) < 0) { return false; }
      return axes.every(function (pair) {
        return !pair[1] || variant.labels[pair[0]] === pair[1];
      });
    });
    var sort = $("sort").value;
    if (sort) {
      var name = sort.split(":")[0], direction = Number(sort.split(":")[1]);
      shown = shown.slice().sort(function (a, b) {
        var x = scoreOf(a, name), y = scoreOf(b, name);
        if (x === null || y === null) { return (x === null) - (y === null); }
        return direction * (x - y);
      });
    }
    return shown;
  }

  function imageSource(sha256, width, height, cssPixels) {
    var sizes = state.data.thumbnail_sizes, wanted = cssPixels * (window.devicePixelRatio || 1);
    var longest = Math.max(width, height);
    if (wanted >= longest) { return "/files/" + sha256; }
    for (var i = 0; i < sizes.length; i++) {
      if (sizes[i] >= wanted) { return "/thumbs/" + sha256 + "/" + sizes[i]; }
    }
    return "/files/" + sha256;
  }

  function cardSize() {
    var slider = $("size"), value = Number(slider.value);
    var full = Number(slider.max) === value;
    $("size-shown").textContent = full ? "full size" : value + " px";
    return full ? Infinity : value;
  }

  function render() {
    var grid = $("grid"), size = cardSize();
    var widest = state.variants.reduce(function (most, v) {
      return Math.max(most, v.render.width); }, 64);
    grid.style.setProperty("--card", (size === Infinity ? widest : size) + "px");
    state.shown = visible();
    grid.replaceChildren();
    state.shown.forEach(function (variant, index) { grid.appendChild(card(variant, index, size)); });
    $("shown").textContent = state.shown.length + " of " + state.variants.length + " shown, " +
      state.selected.size + " selected";
    state.focus = Math.min(state.focus, Math.max(0, state.shown.length - 1));
  }

  function badge(text) { return el("span", {className: "badge " + text, text: text}); }

  function card(variant, index, size) {
    var render = variant.render;
    var id = render.variant_id;
    var node = el("article", {className: "card status-" + render.status + " state-" +
      render.review_state + (state.selected.has(id) ? " selected" : ""), tabindex: "0",
      "data-index": String(index), "data-variant": id});
    var box = el("input", {type: "checkbox", className: "select", "aria-label": "select"});
    box.checked = state.selected.has(id);
    box.addEventListener("change", function () { toggle(id, box.checked); });
    var image = el("img", {alt: id.slice(0, 12), loading: "lazy", width: String(render.width),
      height: String(render.height),
      src: imageSource(render.output_sha256, render.width, render.height,
                       size === Infinity ? Math.max(render.width, render.height) : size)});
    image.style.setProperty("--aspect", render.width + " / " + render.height);
    image.addEventListener("click", function () { openViewer(index); });
    var axes = el("ul", {}, Object.keys(variant.labels).map(function (axis) {
      return el("li", {text: axis + ": " + variant.labels[axis]});
    }));
    var line = el("div", {className: "line"}, [el("code", {text: id.slice(0, 12)}),
      badge(render.status), badge(render.review_state)]);
    var guidelines = el("p", {className: "guidelines", text: variant.guidelines});
    var note = render.review && render.review.note ?
      el("p", {className: "note", text: render.review.note}) : null;
    var actions = el("div", {className: "actions"}, [
      button("approve", "approve", function () { decide("approve", [variant]); }),
      button("reject…", "reject", function () { askReject([variant]); }),
      button("reset", "", function () { decide("reset", [variant]); })]);
    node.append(box, image, line, guidelines, axes);
    if (note) { node.appendChild(note); }
    node.appendChild(actions);
    node.addEventListener("focus", function () { state.focus = index; });
    return node;
  }

  function button(text, className, action) {
    var node = el("button", {type: "button", className: className, text: text});
    node.addEventListener("click", action);
    return node;
  }

  function toggle(id, on) {
    if (on) { state.selected.add(id); } else { state.selected.delete(id); }
    var node = document.querySelector('.card[data-variant="' + id + '"]');
    if (node) {
      node.classList.toggle("selected", on);
      node.querySelector(".select").checked = on;
    }
    $("shown").textContent = state.shown.length + " of " + state.variants.length + " shown, " +
      state.selected.size + " selected";
  }

  function focusCard(index) {
    var cards = document.querySelectorAll("#grid .card");
    if (!cards.length) { return; }
    state.focus = Math.max(0, Math.min(cards.length - 1, index));
    cards[state.focus].focus();
  }

  function columns() {
    var cards = document.querySelectorAll("#grid .card");
    var top = cards.length ? cards[0].offsetTop : 0, count = 0;
    while (count < cards.length && cards[count].offsetTop === top) { count++; }
    return Math.max(1, count);
  }

  // ---------------------------------------------------------------- decisions

  function targets() {
    if (state.open !== null) { return [state.shown[state.open]]; }
    if (state.selected.size) {
      return state.variants.filter(function (v) { return state.selected.has(v.render.variant_id); });
    }
    return state.shown.length ? [state.shown[state.focus]] : [];
  }

  function askReject(variants) {
    var dialog = $("note-dialog");
    $("note-title").textContent = "reject " + variants.length + " variant(s)";
    $("note").value = "";
    dialog.onclose = function () {
      if (dialog.returnValue === "ok") { decide("reject", variants, $("note").value); }
      refocus();
    };
    dialog.returnValue = "";
    dialog.showModal();
    $("note").focus();
  }

  // Each decision names the review the page shows standing for that render (seen: its id,
  // or null when unreviewed). If someone else decided meanwhile, the server stores none of
  // the batch and answers 409 with the current state of each such render.
  function decide(decision, variants, note) {
    if (!variants.length) { return; }
    fetch("/api/reviews", {
      method: "POST", cache: "no-store",
      headers: {"Content-Type": "application/json", "X-Review-Token": token},
      body: JSON.stringify({decisions: variants.map(function (variant) {
        return {render_id: variant.render.id, sha256: variant.render.output_sha256,
                decision: decision, note: note || "",
                seen: variant.render.review ? variant.render.review.review_id : null};
      })})
    }).then(function (response) {
      return response.text().then(function (text) {
        var body; try { body = JSON.parse(text); } catch (e) { body = {error: text}; }
        if (response.status === 409 && Array.isArray(body.conflicts)) {
          throw new Error(conflicted(body));
        }
        if (!response.ok) { throw new Error(body.error || response.statusText); }
        return body;
      });
    }).then(function (body) {
      var byRender = {};
      body.reviews.forEach(function (review) { byRender[review.render_id] = review; });
      state.variants.forEach(function (variant) {
        var review = byRender[variant.render.id];
        if (review) {
          variant.render.review = review.state === "unreviewed" ? null : review;
          variant.render.review_state = review.state;
        }
      });
      if (body.run) { counts(body.run); }
      say(variants.length + " " + decision + (decision === "reset" ? "" : "d") +
          (decision === "reset" ? "" : " by " + state.data.reviewer));
      redraw();
    }).catch(function (error) { say("not saved: " + error.message, true); });
  }

  // A 409 with the current state of the renders someone else decided on meanwhile: show
  // that state, and say who did what, when.
  function conflicted(body) {
    var byRender = {}, done = {approve: "approved", reject: "rejected", reset: "reset"};
    body.conflicts.forEach(function (conflict) { byRender[conflict.render_id] = conflict; });
    var lines = [];
    state.variants.forEach(function (variant) {
      var conflict = byRender[variant.render.id];
      if (!conflict) { return; }
      variant.render.review = conflict.review;
      variant.render.review_state = conflict.review_state;
      var last = conflict.latest, name = variant.render.variant_id.slice(0, 12);
      lines.push(last ? last.reviewer + " " + (done[last.decision] || last.decision) + " " +
        name + " at " + last.reviewed_at.slice(0, 19).replace("T", " ") +
        (last.note ? " (\u201c" + last.note + "\u201d)" : "") + " while you were looking"
        : "the review of " + name + " changed while you were looking");
    });
    if (body.run) { counts(body.run); }
    redraw();
    var shown = lines.slice(0, 3).join("; ");
    if (lines.length > 3) { shown += "; and " + (lines.length - 3) + " more"; }
    return shown + "; look again";
  }

  function redraw() {
    var keep = state.open;
    render();
    if (keep !== null) { openViewer(keep); } else { refocus(); }
  }

  function refocus() { if (state.open === null) { focusCard(state.focus); } }

  // ---------------------------------------------------------------- the viewer

  function figure(src, caption) {
    var image = el("img", {src: src, alt: caption});
    image.addEventListener("error", function () {
      image.replaceWith(el("p", {text: "no copy of these bytes is kept"}));
    });
    return el("figure", {}, [image, el("figcaption", {text: caption})]);
  }

  function openViewer(index) {
    if (index < 0 || index >= state.shown.length) { return; }
    state.open = index;
    var variant = state.shown[index], render = variant.render, box = $("lightbox");
    $("lb-title").textContent = render.variant_id.slice(0, 12) + " · " + render.status +
      " · " + render.review_state;
    // Focus goes to the dialog itself (named by its title), not to its first control, a
    // select that would take the arrow keys; a redraw or prev/next leaves focus where it is.
    if (!box.open) { box.showModal(); box.focus(); }
    var image = $("lb-image");
    image.src = "/files/" + render.output_sha256;
    image.alt = render.variant_id;
    $("lb-caption").textContent = render.output_path + " · " + render.width + "×" +
      render.height + " · sha256 " + render.output_sha256.slice(0, 12);
    applyZoom();
    info(variant);
    compare();
  }

  function info(variant) {
    var render = variant.render, scores = render.decision ? render.decision.scores : render.scores;
    var rows = [["prompt", render.prompt], ["seed", render.seed]];
    Object.keys(variant.labels).forEach(function (axis) { rows.push([axis, variant.labels[axis]]); });
    Object.keys(scores).forEach(function (name) { rows.push([name, scores[name].toFixed(4)]); });
    if (render.decision && render.decision.reasons.length) {
      rows.push(["gate", render.decision.reasons.join("; ")]);
    }
    if (render.review) {
      rows.push(["review", render.review.state + " by " + render.review.reviewer + " at " +
                 render.review.reviewed_at.slice(0, 19) +
                 (render.review.note ? ": " + render.review.note : "")]);
    }
    var list = el("dl");
    definitions(list, rows);
    $("lb-info").replaceChildren(list);
  }

  function compare() {
    var mode = $("lb-compare").value, side = $("lb-side"), other = $("lb-other");
    var variant = state.shown[state.open], render = variant.render, size = 512;
    side.replaceChildren();
    other.hidden = mode !== "variant";
    if (mode === "references") {
      state.data.references.forEach(function (ref) {
        side.appendChild(figure("/thumbs/" + ref.sha256 + "/" + size, "reference " + ref.name));
      });
    } else if (mode === "earlier") {
      if (!variant.earlier.length) { side.appendChild(el("p", {text: "no earlier renders"})); }
      variant.earlier.forEach(function (old) {
        side.appendChild(figure("/thumbs/" + old.output_sha256 + "/" + size, "render " + old.id +
          " of run " + old.run_id + " at " + old.created_at.slice(0, 19) + " (" +
          old.review_state + ")"));
      });
    } else if (mode === "exports") {
      variant.exports.forEach(function (exported) {
        side.appendChild(figure("/files/" + exported.sha256, exported.name + " · " +
          exported.width + "×" + exported.height + " " + exported.format));
      });
    } else if (mode === "variant") {
      if (!other.childElementCount) {
        state.variants.forEach(function (v) {
          other.appendChild(el("option", {value: v.render.variant_id, text:
            v.render.variant_id.slice(0, 12) + " " + Object.keys(v.labels).map(function (a) {
              return v.labels[a]; }).join(" · ")}));
        });
      }
      var chosen = state.variants.filter(function (v) {
        return v.render.variant_id === other.value; })[0];
      if (chosen) {
        side.appendChild(figure("/files/" + chosen.render.output_sha256,
          chosen.render.variant_id.slice(0, 12) + " · " + chosen.render.status));
      }
    }
  }

  function fitScale() {
    var image = $("lb-image"), view = image.parentNode;
    if (!image.naturalWidth) { return 1; }
    return Math.min(view.clientWidth / image.naturalWidth, view.clientHeight / image.naturalHeight);
  }

  function applyZoom() {
    // Sized, not transformed, so the viewport scrolls over the whole zoomed image.
    var image = $("lb-image"), scale = state.zoom || fitScale();
    image.style.setProperty("width", Math.round(image.naturalWidth * scale) + "px");
    image.style.setProperty("height", Math.round(image.naturalHeight * scale) + "px");
    $("zoom-shown").textContent = (state.zoom ? "" : "fit ") + Math.round(scale * 100) + "%";
  }

  function zoom(factor) {
    state.zoom = Math.max(0.25, Math.min(64, (state.zoom || fitScale()) * factor));
    applyZoom();
  }

  // Its button and Esc (the dialog's cancel) both close it here, at once: the dialog's own
  // close event comes a task later, too late for a key pressed right after Esc. Focus goes
  // back to the card of the variant it showed last: the one that opened it, unless ← → moved on.
  function closeViewer() {
    $("lightbox").close();
    state.focus = state.open;
    state.open = null;
    refocus();
  }

  // Tab and Shift+Tab wrap at the viewer's ends: the page behind is inert, but Tab from the
  // last control would otherwise leave the page for the browser's own toolbar.
  function wrapTab(event) {
    if (event.key !== "Tab" || event.altKey || event.ctrlKey || event.metaKey) { return; }
    var box = $("lightbox"), at = document.activeElement;
    var stops = Array.prototype.filter.call(box.querySelectorAll("button, select, [tabindex='0']"),
      function (node) { return node.getClientRects().length > 0; });  // not hidden
    var first = stops[0], last = stops[stops.length - 1];
    if (event.shiftKey ? at === first || at === box : at === last) {
      (event.shiftKey ? last : first).focus();
      event.preventDefault();
    }
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    ["status-filter", "review-filter", "guideline-filter", "sort"].forEach(function (id) {
      $(id).addEventListener("change", render);
    });
    $("size").addEventListener("input", render);
    $("toolbar").addEventListener("submit", function (event) { event.preventDefault(); });
    $("select-all").addEventListener("click", function () {
      state.shown.forEach(function (v) { toggle(v.render.variant_id, true); });
    });
    $("select-none").addEventListener("click", function () {
      Array.from(state.selected).forEach(function (id) { toggle(id, false); });
    });
    $("approve-selected").addEventListener("click", function () { decide("approve", targets()); });
    $("reject-selected").addEventListener("click", function () { askReject(targets()); });
    $("reset-selected").addEventListener("click", function () { decide("reset", targets()); });
    $("lb-close").addEventListener("click", closeViewer);
    $("lightbox").addEventListener("cancel", function (event) {
      event.preventDefault();
      closeViewer();
    });
    $("lightbox").addEventListener("keydown", wrapTab);
    $("lb-prev").addEventListener("click", function () { openViewer(state.open - 1); });
    $("lb-next").addEventListener("click", function () { openViewer(state.open + 1); });
    $("lb-approve").addEventListener("click", function () { decide("approve", targets()); });
    $("lb-reject").addEventListener("click", function () { askReject(targets()); });
    $("lb-reset").addEventListener("click", function () { decide("reset", targets()); });
    $("lb-image").addEventListener("load", applyZoom);
    window.addEventListener("resize", function () { if (state.open !== null) { applyZoom(); } });
    $("lb-compare").addEventListener("change", compare);
    $("lb-other").addEventListener("change", compare);
    $("zoom-in").addEventListener("click", function () { zoom(2); });
    $("zoom-out").addEventListener("click", function () { zoom(0.5); });
    $("zoom-fit").addEventListener("click", function () { state.zoom = 0; applyZoom(); });
    $("zoom-one").addEventListener("click", function () { state.zoom = 1; applyZoom(); });
    $("lb-main").addEventListener("wheel", function (event) {
      if (!event.ctrlKey) { return; }
      event.preventDefault();
      zoom(event.deltaY < 0 ? 1.25 : 0.8);
    }, {passive: false});
    document.addEventListener("keydown", keys);
  }

  function keys(event) {
    var target = event.target;
    if ($("note-dialog").open || event.altKey || event.metaKey || event.ctrlKey) { return; }
    if (target.tagName === "SELECT" || target.tagName === "TEXTAREA" ||
        (target.tagName === "INPUT" && target.type !== "checkbox")) { return; }
    // A focused button keeps its own Enter and space: it is pressed, not the shortcut.
    if (target.tagName === "BUTTON" && (event.key === "Enter" || event.key === " ")) { return; }
    var viewing = state.open !== null, handled = true;
    switch (event.key) {
      case "ArrowRight": if (viewing) { openViewer(state.open + 1); } else { focusCard(state.focus + 1); } break;
      case "ArrowLeft": if (viewing) { openViewer(state.open - 1); } else { focusCard(state.focus - 1); } break;
      // In the viewer ↑ ↓ are left to the focused region (the zoomed image, the details) to scroll.
      case "ArrowDown": if (viewing) { handled = false; } else { focusCard(state.focus + columns()); } break;
      case "ArrowUp": if (viewing) { handled = false; } else { focusCard(state.focus - columns()); } break;
      case "a": decide("approve", targets()); break;
      case "r": askReject(targets()); break;
      case "u": decide("reset", targets()); break;
      case " ": if (!viewing && state.shown.length) {
        var id = state.shown[state.focus].render.variant_id;
        toggle(id, !state.selected.has(id)); } break;
      case "Enter": if (!viewing) { openViewer(state.focus); } break;
      case "+": case "=": if (viewing) { zoom(2); } break;
      case "-": if (viewing) { zoom(0.5); } break;
      case "0": if (viewing) { state.zoom = 0; applyZoom(); } break;
      default: handled = false;
    }
    if (handled) { event.preventDefault(); }
  }

  wire();
  load();
})();
