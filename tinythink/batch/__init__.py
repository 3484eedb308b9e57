"""OpenAI's Files and Batch APIs on one server: files and batch jobs kept in SQLite and a files directory (store),
each batch's input checked line by line (lines), and a worker that runs the lines through the server's own
endpoints at a lower priority than interactive requests, resuming after a restart where it stopped (worker)."""
