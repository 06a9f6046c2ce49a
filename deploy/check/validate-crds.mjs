// Validate custom resources against the CRD schemas packaged as typed models on npm
// (@kubernetes-models/keda, @kubernetes-models/prometheus-operator). Reads a JSON array of
// manifests on stdin; prints one line per resource checked ("ok KIND/NAME" or
// "error KIND/NAME: ...") and one "skip" line per kind it has no schema for; exits 1 on an
// error. The packaged schemas check types, enums, patterns and required fields; like the CRDs
// they come from, they allow unknown fields (the API server would prune them), so those are
// not caught here.
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const resource of resources) {
  const key = `${resource.apiVersion}/${resource.kind}`;
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const Model = MODELS[key];
  if (!Model) {
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`error ${name}: ${error.message.replace(/\s+/g, " ")}`);
  }
}
process.exit(failed ? 1 : 0);
