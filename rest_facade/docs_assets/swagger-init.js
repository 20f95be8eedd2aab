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
    // The default shows a badge from validator.swagger.io (and sends it the document's URL):
    // the docs ask no host but this one.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
