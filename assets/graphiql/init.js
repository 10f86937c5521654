// GraphiQL for bankgraph: everything it loads comes from this server (no CDN), under a
// Content-Security-Policy that allows only this origin. Put a token from
// `bankgraph token --sub you` in the Headers tab; it is not stored by the page.
(function () {
  var fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: "headers",
      defaultHeaders: '{\n  "Authorization": "Bearer <token>"\n}',
      shouldPersistHeaders: false,
      defaultQuery:
        "# Put a MANAGE_PAYMENT token in Headers (bankgraph token --sub you), then run:\n" +
        "{\n  getPlaidBankAccounts {\n    bankAccountId\n    bankInstitutionName\n    accountName\n    lastFour\n    status\n  }\n}\n",
    }),
  );
})();
