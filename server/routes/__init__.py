"""HTTP routes, one module per area. server.app mounts ``docs`` and ``ops``; the others
belong to the extensions that serve them (undo, history, admin), listed explicitly."""
