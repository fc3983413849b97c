"""The documented import path of the app-side secret provider (`logd.secrets.provider`);
the code lives in `logd.client.secret_provider`, the server's secrets in `logd.server.secrets`."""
