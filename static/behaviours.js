// Small page behaviours, declared with data- attributes instead of inline handlers, so that the pages can run
// under a Content-Security-Policy that allows no inline script. Delegated from the document, so content htmx
// swaps in gets them too.
//   data-select-on-focus          an input that selects its text when focused
//   data-copy-from="ID"           a button that copies the value (or text) of #ID and says "Copied"
//   data-mirror-to="ID"           an input whose value is copied to #ID (an input event follows there)
//   data-mirror-if="REGEX" ...    ... only when the value matches REGEX
//   data-hides="SELECTOR"         a checkbox that hides SELECTOR (within its fieldset) while it is ticked
//   data-width="N"                an element whose width is N percent (a progress bar)
//   <html data-accent="#RRGGBB">  the widget's accent colour
(function () {
  "use strict";

  // The widget's accent colour, from <html data-accent> (a <style> block would break the CSP).
  const accent = document.documentElement.getAttribute("data-accent");
  if (accent && /^#[0-9a-fA-F]{6}$/.test(accent)) document.documentElement.style.setProperty("--accent", accent);

  document.addEventListener("focusin", function (e) {
    if (e.target.matches && e.target.matches("[data-select-on-focus]")) e.target.select();
  });

  document.addEventListener("click", function (e) {
    const button = e.target.closest && e.target.closest("[data-copy-from]");
    if (!button) return;
    const source = document.getElementById(button.getAttribute("data-copy-from"));
    if (!source) return;
    const text = "value" in source && source.value !== undefined ? source.value : source.innerText;
    const label = button.textContent;
    const done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 2000);
    };
    if (source.select) source.select();
    if (navigator.clipboard) {
      navigator.clipboard.writeText(text).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  document.addEventListener("input", function (e) {
    const from = e.target;
    if (!from.matches || !from.matches("[data-mirror-to]")) return;
    const pattern = from.getAttribute("data-mirror-if");
    if (pattern && !new RegExp(pattern).test(from.value)) return;
    const to = document.getElementById(from.getAttribute("data-mirror-to"));
    if (!to || to.value === from.value) return;
    to.value = from.value;
    if (!to.hasAttribute("data-mirror-to")) to.dispatchEvent(new Event("input", { bubbles: true }));
  });

  document.addEventListener("change", function (e) {
    const box = e.target;
    if (!box.matches || !box.matches("input[type=checkbox][data-hides]")) return;
    const scope = box.closest("fieldset") || document;
    scope.querySelectorAll(box.getAttribute("data-hides")).forEach(function (el) { el.hidden = box.checked; });
  });

  function widths(root) {
    (root || document).querySelectorAll("[data-width]").forEach(function (el) {
      el.style.width = Math.max(0, Math.min(100, Number(el.getAttribute("data-width")) || 0)) + "%";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { widths(document); });
  document.addEventListener("htmx:afterSettle", function (e) { widths(e.target); });
})();
