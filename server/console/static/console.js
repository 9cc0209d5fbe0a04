// The QA console: a page left alone is cleared when its session ends.
// After the session's idle time (data-idle-s, the server's idle timeout) with no request from
// the page, what it shows (the patient's chain of identity, results, signatures) is removed at
// once, a notice says why, and two seconds later the browser goes to the sign-in screen, where
// the server (which ended the session) says the same.  Clearing first means nothing stays on
// screen if the sign-in page cannot be reached.
(function () {
  "use strict";
  var idle = Number(document.body.getAttribute("data-idle-s") || 0);
  if (!idle) { return; }
  var timer = 0;
  function end() {
    var main = document.querySelector("main");
    var nav = document.querySelector("nav.screens");
    if (nav) { nav.remove(); }
    if (main) {
      main.replaceChildren();
      var note = document.createElement("div");
      note.className = "banner notice";
      note.id = "session-ended";
      note.setAttribute("role", "alert");
      var span = idle >= 120 ? Math.round(idle / 60) + " minutes" : idle + " seconds";
      note.textContent = "Your session ended after " + span +
        " without activity; this page was cleared. Sign in again.";
      main.appendChild(note);
    }
    document.title = "Session ended · CTGTP QA console";
    window.setTimeout(function () { window.location.assign("/console/signin?expired=1"); }, 2000);
  }
  function arm() {
    window.clearTimeout(timer);
    timer = window.setTimeout(end, (idle + 1) * 1000);
  }
  arm();
  document.addEventListener("htmx:afterRequest", arm);
})();
