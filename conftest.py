"""Root pytest configuration: the server fixtures come from the devstack plugin."""

pytest_plugins = ["esquadrao_devstack.pytest_plugin"]
