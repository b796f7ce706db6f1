//! Placeholder until the host tool check lands.
use crate::error::RuntimeError;

pub(crate) const IMAGE_TOOLS: &[&str] = &[];
pub(crate) const VM_TOOLS: &[&str] = &[];

pub(crate) fn check(_tools: &[&str]) -> Result<(), RuntimeError> {
    Ok(())
}
