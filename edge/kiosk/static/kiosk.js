// The kiosk's only script: codes from a scanner reach the screen's scan form without a touch.
// A keyboard-wedge scanner types fast and ends with Enter: when no field has the focus, such a
// burst is put into the form marked data-scan-target and submitted.  The attached scanner's
// codes arrive as the SSE event "scan" (see edge/kiosk/live.py) and go the same way.
(function () {
  "use strict";
  var MAX_GAP_MS = 80; // a person types slower than this between keys; a scanner faster
  var buffer = "";
  var last = 0;

  // The code goes into the focused scan field if it is empty, else the form's first empty scan
  // field, else its first; the form is then submitted, unless it waits for a button press
  // (data-scan-manual: a hand-off takes a bag and a shipper before two people sign).
  function deliver(code) {
    var form = document.querySelector("[data-scan-target]");
    if (!form) { return; }
    var inputs = Array.prototype.slice.call(form.querySelectorAll("[data-scan-input]"));
    if (!inputs.length) { return; }
    var input = inputs.filter(function (i) { return i === document.activeElement && !i.value; })[0]
      || inputs.filter(function (i) { return !i.value; })[0] || inputs[0];
    input.value = code;
    if (form.hasAttribute("data-scan-manual")) {
      var next = inputs.filter(function (i) { return !i.value; })[0];
      if (next) { next.focus(); }
      return;
    }
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  }

  document.addEventListener("keydown", function (e) {
    // The key's own time (when the keyboard sent it), not the time this handler runs: a page
    // busy for a moment (a swap, a reload of a panel) delays the handler, not the scanner.
    var now = e.timeStamp;
    if (now - last > MAX_GAP_MS) { buffer = ""; }
    var el = e.target;
    var inField = el && el.closest && el.closest("input, textarea, select, [contenteditable]");
    if (inField && !buffer) {
      return; // a focused field takes the scanner's keys itself; Enter submits its form
    }
    // A burst begun with no field focused stays the page's when a field takes the focus half-way
    // (a panel swapped in focuses its scan field): its keys are kept out of that field.
    last = now;
    if (e.key === "Enter") {
      if (buffer.length >= 3) { e.preventDefault(); deliver(buffer); }
      buffer = "";
    } else if (e.key.length === 1) {
      buffer += e.key;
      if (inField) { e.preventDefault(); }
    }
  });

  document.addEventListener("htmx:sseMessage", function (e) {
    var msg = e.detail;
    if (msg && msg.type === "scan") { deliver(JSON.parse(msg.data)); }
  });
})();
document.addEventListener("htmx:sseOpen", function () {
  document.body.setAttribute("data-live", "1"); // the page's event stream is open
});
// A screen left alone locks itself: after the session's idle time with no request, the page
// reloads, and the kiosk (which ended the session) shows the sign-in screen.
(function () {
  "use strict";
  var idle = Number(document.body.getAttribute("data-idle-s") || 0);
  if (!idle) { return; }
  var timer = 0;
  function arm() {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { window.location.reload(); }, (idle + 2) * 1000);
  }
  arm();
  document.addEventListener("htmx:afterRequest", arm);
  document.addEventListener("htmx:sseMessage", arm); // a scan taken by the step is activity
})();
