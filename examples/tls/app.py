"""HTTPS with Cello: HTTP/1.1 and HTTP/2 (ALPN) on one port, HTTP/3 (QUIC) on the same port
number over UDP, optional mutual TLS.

Make a certificate (any PEM chain and key work; for a local try, trustme or mkcert):

    python -c "import trustme; ca = trustme.CA(); c = ca.issue_cert('localhost', '127.0.0.1'); \\
        c.private_key_and_cert_chain_pem.write_to_path('server.pem'); ca.cert_pem.write_to_path('ca.pem')"

Then either of:

    TLS_CERT=server.pem TLS_KEY=server.pem python examples/tls/app.py        # app.enable_tls()
    cello run examples.tls.app:app --ssl-certfile server.pem --ssl-keyfile server.pem

    curl --cacert ca.pem https://localhost:8443/            # HTTP/2 when curl supports it
    curl --http3-only --cacert ca.pem https://localhost:8443/   # HTTP/3 (TLS_HTTP3=1, a curl with h3)
    kill -HUP <pid>                                         # re-read the certificate files

Add ``--ssl-ca-certs clients-ca.pem`` (or ``TlsConfig(ca_path=..., require_client_cert=True)``)
for mutual TLS: the client certificate's subject is ``request.context["client_cert"]``.
"""

import os

from cello import App, Http3Config, TlsConfig

app = App()

if os.environ.get("TLS_CERT"):
    app.enable_tls(TlsConfig(os.environ["TLS_CERT"], os.environ.get("TLS_KEY", os.environ["TLS_CERT"])))
    if os.environ.get("TLS_HTTP3") == "1":
        # QUIC on the TLS port number (UDP), same certificate; HTTP/1.1 and HTTP/2 answers
        # advertise it with Alt-Svc.
        app.enable_http3(Http3Config())


@app.get("/")
def index(request):
    return {
        "scheme": request.scheme,
        "http_version": request.http_version,
        "client_cert": request.context.get("client_cert"),
    }


if __name__ == "__main__":
    app.run(port=8443)
