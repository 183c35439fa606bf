// すべて選択: a checkbox with data-select-all="NAME" checks or clears every checkbox named NAME in its
// form, and shows itself as mixed when only some are checked.
(function () {
  "use strict";

  function boxes(master) {
    return master.form.querySelectorAll('input[type=checkbox][name="' + master.dataset.selectAll + '"]');
  }

  function reflect(master) {
    var all = boxes(master), checked = 0;
    for (var i = 0; i < all.length; i++) { if (all[i].checked) { checked++; } }
    master.checked = all.length > 0 && checked === all.length;
    master.indeterminate = checked > 0 && checked < all.length;
  }

  document.querySelectorAll("input[type=checkbox][data-select-all]").forEach(function (master) {
    master.hidden = false;
    master.addEventListener("change", function () {
      boxes(master).forEach(function (box) { box.checked = master.checked; });
      master.indeterminate = false;
    });
    master.form.addEventListener("change", function (event) {
      if (event.target !== master && event.target.name === master.dataset.selectAll) { reflect(master); }
    });
    reflect(master);
  });
})();
