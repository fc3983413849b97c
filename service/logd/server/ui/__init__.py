"""The web page's files (index.html, app.js, app.css), served by logd.server.http.ui."""
