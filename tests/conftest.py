pytest_plugins = ["docutray_watch.testing"]
