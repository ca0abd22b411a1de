"""The contacts REST API: routers, request and response models, error translation."""
