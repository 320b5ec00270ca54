"""PID 1's supervision: the one event loop that reaps every child and never dies (``loop``), and the clean
power-off sequence (``shutdown``)."""
