// Validates KEDA, prometheus-operator and cert-manager objects with the @kubernetes-models
// validators. Reads a JSON array of objects on stdin, prints one JSON result per object and
// exits 1 when any object is invalid or of a kind no validator knows.

const KINDS = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": [
    "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication",
    "TriggerAuthentication",
  ],
  "monitoring.coreos.com/v1/ServiceMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    "ServiceMonitor",
  ],
  "monitoring.coreos.com/v1/PodMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
    "PodMonitor",
  ],
  "cert-manager.io/v1/Certificate": ["@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate", "Certificate"],
};

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const docs = JSON.parse(input);
  const results = [];
  for (const [index, doc] of docs.entries()) {
    results.push(await check(index, doc));
  }
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(results.every((r) => r.ok) ? 0 : 1);
});

async function check(index, doc) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const entry = KINDS[key];
  if (!entry) {
    return { index, key, ok: false, error: "no validator for this kind" };
  }
  try {
    const Model = (await import(entry[0]))[entry[1]];
    new Model(doc).validate();
    return { index, key, ok: true };
  } catch (e) {
    return { index, key, ok: false, error: String(e && e.message ? e.message : e) };
  }
}
