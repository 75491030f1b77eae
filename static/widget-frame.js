// Inside the ticket widget: tell the page that embeds it how tall the widget's content is, each time it changes
// (quantities chosen, attendee fields added, errors shown, the confirmation), so its iframe fits without scrolling.
//
// It answers only a parent window that said hello (static/embed.js), and addresses its heights to that window's
// origin alone. Until then nothing is sent and the iframe scrolls as any iframe would.
(function () {
  "use strict";
  if (window.parent === window || !window.ResizeObserver) return;
  var parentOrigin = null;
  var last = 0;

  function content() {
    return document.querySelector(".widget") || document.body;
  }

  function send() {
    if (!parentOrigin) return;
    var box = content();
    var height = Math.ceil(box.getBoundingClientRect().bottom + window.scrollY);
    if (height === last) return;
    last = height;
    window.parent.postMessage({ type: "ticketing:height", height: height }, parentOrigin);
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent || !event.data || event.data.type !== "ticketing:hello") return;
    parentOrigin = event.origin;
    // The parent sizes the frame from now on: no inner scrollbar, even for the moment before it has.
    document.documentElement.classList.add("sized-by-parent");
    last = 0;
    send();
  });

  function observe() {
    new ResizeObserver(send).observe(content());
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", observe);
  else observe();
})();
