// 一括登録 (CSV) progress: the server streams one <p class="import-step"> per chunk of rows while the
// import runs; only the newest one stays, so the page shows a single bar that moves. Loaded in <head>
// (before the body streams in); without JavaScript every step simply stays on the page.
(function () {
  "use strict";

  function keepNewestStep() {
    var steps = document.querySelectorAll(".import-step");
    for (var i = 0; i < steps.length - 1; i++) { steps[i].remove(); }
  }

  var observer = new MutationObserver(keepNewestStep);
  observer.observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener("DOMContentLoaded", function () { keepNewestStep(); observer.disconnect(); });
})();
