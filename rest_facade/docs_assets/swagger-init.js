// Starts Swagger UI on /docs. A file of its own, not an inline script, so the page's CSP can
// allow scripts from 'self' only.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Never a badge from validator.swagger.io (it would get the document's URL). BaseLayout
    // shows none; this keeps it so should the layout change.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
