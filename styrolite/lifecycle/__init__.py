"""One module per lifecycle operation (youki's layout): create, start, kill, delete, exec, query, pause, update."""
