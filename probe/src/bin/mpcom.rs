//! `mpcom` — the mPlane component runtime.
fn main() -> anyhow::Result<()> {
    Ok(())
}
