// Package deploy holds no code: it is the home of the deployment files
// (packages, systemd units, containers, Compose, Kubernetes, NATS cluster,
// Prometheus rules, Grafana dashboard), and its tests load each of them with
// the parser of the program that consumes it.
package deploy
