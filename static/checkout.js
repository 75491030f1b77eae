// The checkout's live order summary: htmx refreshes the summary and the discount code's message as the buyer
// types; this keeps the field's aria-invalid in step with that message, so a screen reader hears what the page
// shows (an invalid code is flagged before the form is sent).
(function () {
  "use strict";
  document.addEventListener("htmx:afterSettle", function () {
    const message = document.getElementById("discount_code-error");
    const field = document.getElementById("discount_code");
    if (!message || !field) return;
    if (message.textContent.trim()) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
  });
})();

// The SMS consent box is asked only of a purchaser who gives a phone number: it shows as one is typed, and a
// cleared number takes the tick away with the box.
(function () {
  "use strict";
  document.addEventListener("input", function (event) {
    if (!event.target || event.target.id !== "phone") return;
    const box = document.getElementById("marketing-sms");
    if (!box) return;
    const hasPhone = event.target.value.trim() !== "";
    box.hidden = !hasPhone;
    if (!hasPhone) box.querySelector("input").checked = false;
  });
})();
