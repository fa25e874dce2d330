"""Code that runs inside Ray (job drivers, tasks, train loops); heavy imports are fine here."""
