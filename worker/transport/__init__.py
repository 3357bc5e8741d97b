"""Transport: the Dapr sidecar at the edge of the worker.

`sidecar` calls into daprd (the client shares it); `dapr` is what daprd calls.
"""
