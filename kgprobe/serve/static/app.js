// kgprobe serve: small conveniences on top of pages that work without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Ctrl+Enter (Cmd+Enter) in a text area submits its form (the SPARQL query, a new entity's text).
  document.querySelectorAll("textarea").forEach(function (area) {
    area.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && area.form) {
        event.preventDefault();
        area.form.submit();
      }
    });
  });
  // Escape in the filter box clears it and shows every tuple again.
  var filter = document.getElementById("filter");
  if (filter && filter.form) {
    filter.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && filter.value !== "") {
        filter.value = "";
        filter.form.submit();
      }
    });
  }
});
