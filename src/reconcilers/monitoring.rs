//! Placeholder while the monitoring builders are written.
use crate::crd::validate::ValidatedSystem;
pub const API_VERSION: &str = "monitoring.coreos.com/v1";
pub fn prometheus_rule(_system: &ValidatedSystem) -> Option<kube::api::DynamicObject> {
    None
}
pub fn service_monitor(_system: &ValidatedSystem) -> Option<kube::api::DynamicObject> {
    None
}
