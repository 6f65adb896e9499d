"""The network and what describes it: operators (nets), spaces, architectures, cost."""
