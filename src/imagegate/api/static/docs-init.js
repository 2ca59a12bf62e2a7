// Starts Swagger UI on /docs. Kept in a file (not inline) so the page's CSP can forbid
// inline scripts; the assets come from the swagger-ui-bundle package, not a CDN.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
