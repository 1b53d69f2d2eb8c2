-- Kubernetes ingress host of a provision (NULL under the local driver). Unique among provisions
-- that still hold it, so no workspace can claim a host another one serves; deprovisioning frees it.
ALTER TABLE provisions ADD COLUMN host text;
CREATE UNIQUE INDEX provisions_host_key ON provisions (host) WHERE host IS NOT NULL AND status <> 'deprovisioned';
