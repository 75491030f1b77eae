// Keyboard behaviour of the ⋯ menus (a native popover with role="menu"), as the ARIA menu button pattern has it:
// ArrowDown/ArrowUp move between the items (wrapping), Home/End go to the first/last, Escape and Tab close the
// menu, Escape returns focus to its button, and choosing an item closes the menu. ArrowDown/ArrowUp on the
// button open the menu on its first/last item. Delegated from the document, so menus swapped in by htmx work too.
(function () {
  "use strict";

  function items(menu) {
    return Array.from(menu.querySelectorAll('[role="menuitem"]'));
  }

  function buttonOf(menu) {
    return document.querySelector('[popovertarget="' + CSS.escape(menu.id) + '"]');
  }

  function open(menu, which) {
    if (!menu.matches(":popover-open")) menu.showPopover();
    const list = items(menu);
    if (list.length) list[which === "last" ? list.length - 1 : 0].focus();
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    const menu = target.closest && target.closest('[popover][role="menu"]');
    if (!menu) {
      const button = target.closest && target.closest('[aria-haspopup="menu"][popovertarget]');
      const owned = button && document.getElementById(button.getAttribute("popovertarget"));
      if (owned && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
        event.preventDefault();
        open(owned, event.key === "ArrowUp" ? "last" : "first");
      }
      return;
    }
    const list = items(menu);
    const at = list.indexOf(document.activeElement);
    let next = null;
    switch (event.key) {
      case "ArrowDown": next = list[(at + 1) % list.length]; break;
      case "ArrowUp": next = list[(at - 1 + list.length) % list.length]; break;
      case "Home": next = list[0]; break;
      case "End": next = list[list.length - 1]; break;
      case "Escape": {
        event.preventDefault();
        menu.hidePopover();
        const button = buttonOf(menu);
        if (button) button.focus();
        return;
      }
      case "Tab": menu.hidePopover(); return;  // focus moves on from the button, as Tab normally would
      default: return;
    }
    event.preventDefault();
    if (next) next.focus();
  });

  document.addEventListener("click", function (event) {
    const item = event.target.closest && event.target.closest('[popover][role="menu"] [role="menuitem"]');
    if (item) item.closest("[popover]").hidePopover();
  });
})();
