"""The Kubernetes source of the control plane.

- `client`: a small async REST client (kubeconfig / in-cluster, list, watch).
- `reflector`: list + resumable watch per kind into a local store.
- `translate`: pure: stores -> the `Manifest` model the rest of the control plane serves.
- `source`: runs the reflectors and hands each rebuilt `Manifest` on.
"""
