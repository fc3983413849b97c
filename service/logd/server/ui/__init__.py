"""The web page's files (index.html, app.js, app.css, icon.svg), served by
logd.server.http.ui."""
