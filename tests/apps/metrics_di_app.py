"""di_app with Prometheus on (/metrics), for the background-task failure counter."""

from di_app import app

app.enable_prometheus()

if __name__ == "__main__":
    app.run()
