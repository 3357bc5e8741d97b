"""Transport: the Dapr sidecar at the edge of the worker.

`sidecar` calls into daprd over gRPC (the client shares it); `dapr` is what daprd calls.
The worker's publishes go over daprd's HTTP API instead (`http_publisher`, on the
HTTP/1.1 client `http1`), large bulk publishes excepted (`routed`): each call where it
costs least.
"""
