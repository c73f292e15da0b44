"""The local stack: moto server, an event-source emulator and an HTTP gateway, driven by
infra/template.yaml, so the whole system runs on one machine without Docker or an AWS account."""
