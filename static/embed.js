// The embed snippet's script, on the organizer's own site: each ticket widget iframe (data-ticketing-widget) takes
// the height of its content, so the checkout never scrolls inside its frame.
//
// Messages are checked both ways. This page says hello to each widget, addressed to the portal's origin only
// (taken from this script's own URL), whenever the widget has loaded a page; a widget answers with its height,
// addressed to the origin that said hello, and only to its parent window. Heights are accepted only from the
// portal's origin and only from a widget iframe's own window. Without JavaScript the iframe keeps the fixed
// height of the snippet and scrolls.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !window.postMessage || !window.URL) return;
  var origin = new URL(script.src, document.baseURI).origin;
  var SELECTOR = "iframe[data-ticketing-widget]";

  function hello(frame) {
    try {
      if (frame.contentWindow) frame.contentWindow.postMessage({ type: "ticketing:hello" }, origin);
    } catch (e) { /* the frame is gone */ }
  }

  window.addEventListener("message", function (event) {
    var data = event.data;
    if (event.origin !== origin || !data || data.type !== "ticketing:height") return;
    var height = Number(data.height);
    if (!isFinite(height) || height < 50 || height > 20000) return;
    var frames = document.querySelectorAll(SELECTOR);
    for (var i = 0; i < frames.length; i++) {
      if (frames[i].contentWindow === event.source) {
        frames[i].style.height = Math.ceil(height) + "px";
        frames[i].setAttribute("scrolling", "no");
      }
    }
  });

  // A widget loads a new page at each step (checkout, errors, confirmation): say hello after every load. Load
  // events do not bubble, but they do reach a capturing listener, which also covers frames added later.
  document.addEventListener("load", function (event) {
    if (event.target.matches && event.target.matches(SELECTOR)) hello(event.target);
  }, true);
  var frames = document.querySelectorAll(SELECTOR);
  for (var i = 0; i < frames.length; i++) hello(frames[i]);
})();
