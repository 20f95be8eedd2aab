"""The sandbox worker: runs pipeline code in limited, single-use child processes."""
