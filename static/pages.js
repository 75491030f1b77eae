// What phones and htmx refreshes need on every portal page, delegated from the document so content that htmx
// swaps in gets it too:
// - each table cell carries its column's header as data-label (unless the template set one), so that app.css can
//   stack a table's rows on a phone and still say what each value is;
// - a disclosure (<details id=...>) the organizer opened stays open when htmx refreshes the part of the page it is
//   in (the order's sync timeline and the confirmation's sync panel poll while events are on their way).
(function () {
  "use strict";

  function label(root) {
    root.querySelectorAll("table").forEach(function (table) {
      const heads = Array.from(table.querySelectorAll(":scope > thead th"), function (th) {
        return th.textContent.trim();
      });
      if (!heads.length) return;
      table.querySelectorAll(":scope > tbody > tr").forEach(function (row) {
        Array.from(row.children).forEach(function (cell, i) {
          if (!cell.hasAttribute("data-label") && heads[i]) cell.setAttribute("data-label", heads[i]);
        });
      });
    });
  }

  let open = [];
  document.addEventListener("htmx:beforeSwap", function () {
    open = Array.from(document.querySelectorAll("details[open][id]"), function (d) { return d.id; });
  });
  document.addEventListener("htmx:afterSettle", function () {
    open.forEach(function (id) {
      const details = document.getElementById(id);
      if (details) details.open = true;
    });
    label(document);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { label(document); });
  } else {
    label(document);
  }
})();
