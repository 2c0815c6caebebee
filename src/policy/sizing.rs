//! Provider sizing: the size a provider really bills for a pod's request, and what it cannot run.
//!
//! Fargate only runs a fixed set of CPU/memory pairs, so a request rounds up to the cheapest valid
//! pair. ACI takes CPU in steps of 0.01 vCPU and memory in steps of 0.1 GiB (as the virtual-kubelet
//! ACI provider sends them), with 1 vCPU / 1.5 GiB when a pod requests nothing, and at most
//! 31 vCPU / 240 GiB per container group. Cluster and sim targets take the request as it is.
//! Cost is always computed on the rounded size.

use crate::policy::model::ProviderKind;
use crate::policy::pod::Resources;

/// The size a provider bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size {
    /// CPU in millicores.
    pub milli_cpu: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl Size {
    /// vCPU.
    pub fn vcpu(&self) -> f64 {
        self.milli_cpu as f64 / 1000.0
    }
    /// GiB.
    pub fn memory_gib(&self) -> f64 {
        self.memory_mib as f64 / 1024.0
    }
}

/// Why a provider cannot run a pod of this size at all. Never retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    /// More CPU than the provider's largest size.
    #[error("needs {need_milli} mCPU, provider maximum is {max_milli} mCPU")]
    CpuTooLarge {
        /// Requested millicores.
        need_milli: u64,
        /// Provider maximum.
        max_milli: u64,
    },
    /// More memory than the provider's largest size (for the CPU it needs).
    #[error("needs {need_mib} MiB, provider maximum is {max_mib} MiB")]
    MemoryTooLarge {
        /// Requested MiB.
        need_mib: u64,
        /// Provider maximum.
        max_mib: u64,
    },
}

const GIB: u64 = 1024;

/// Fargate's valid pairs: (millicores, min MiB, max MiB, step MiB). 0.25 vCPU takes 0.5, 1 or 2 GiB.
const FARGATE: [(u64, u64, u64, u64); 7] = [
    (250, 512, 2 * GIB, 512),
    (500, GIB, 4 * GIB, GIB),
    (1000, 2 * GIB, 8 * GIB, GIB),
    (2000, 4 * GIB, 16 * GIB, GIB),
    (4000, 8 * GIB, 30 * GIB, GIB),
    (8000, 16 * GIB, 60 * GIB, 4 * GIB),
    (16000, 32 * GIB, 120 * GIB, 8 * GIB),
];

/// ACI per-container-group maximum CPU, millicores.
pub const ACI_MAX_MILLI_CPU: u64 = 31_000;
/// ACI per-container-group maximum memory, MiB.
pub const ACI_MAX_MEMORY_MIB: u64 = 240 * GIB;

/// The size `provider` bills for a pod requesting `req`.
pub fn fit(provider: ProviderKind, req: &Resources) -> Result<Size, SizingError> {
    match provider {
        ProviderKind::Fargate => fit_fargate(req),
        ProviderKind::Aci => fit_aci(req),
        ProviderKind::Cluster | ProviderKind::Sim => Ok(Size {
            milli_cpu: req.milli_cpu,
            memory_mib: req.memory_mib,
        }),
    }
}

fn fit_fargate(req: &Resources) -> Result<Size, SizingError> {
    let (max_cpu, _, max_mem, _) = FARGATE[FARGATE.len() - 1];
    if req.milli_cpu > max_cpu {
        return Err(SizingError::CpuTooLarge {
            need_milli: req.milli_cpu,
            max_milli: max_cpu,
        });
    }
    for (cpu, min_mem, top, step) in FARGATE {
        if cpu < req.milli_cpu || top < req.memory_mib {
            continue;
        }
        let wanted = req.memory_mib.max(min_mem);
        let steps = (wanted - min_mem).div_ceil(step);
        return Ok(Size {
            milli_cpu: cpu,
            memory_mib: min_mem + steps * step,
        });
    }
    Err(SizingError::MemoryTooLarge {
        need_mib: req.memory_mib,
        max_mib: max_mem,
    })
}

fn fit_aci(req: &Resources) -> Result<Size, SizingError> {
    let milli_cpu = if req.milli_cpu == 0 {
        1000
    } else {
        // Saturating, like the rounding below: a request too large to round is too large.
        req.milli_cpu.div_ceil(10).saturating_mul(10)
    };
    // 0.1 GiB steps, in MiB: round up to the next tenth of a GiB, then up to a whole MiB.
    let memory_mib = if req.memory_mib == 0 {
        1536
    } else {
        let tenths = req.memory_mib.saturating_mul(10).div_ceil(GIB);
        tenths.saturating_mul(GIB).div_ceil(10)
    };
    if milli_cpu > ACI_MAX_MILLI_CPU {
        return Err(SizingError::CpuTooLarge {
            need_milli: milli_cpu,
            max_milli: ACI_MAX_MILLI_CPU,
        });
    }
    if memory_mib > ACI_MAX_MEMORY_MIB {
        return Err(SizingError::MemoryTooLarge {
            need_mib: memory_mib,
            max_mib: ACI_MAX_MEMORY_MIB,
        });
    }
    Ok(Size {
        milli_cpu,
        memory_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(milli_cpu: u64, memory_mib: u64) -> Resources {
        Resources {
            milli_cpu,
            memory_mib,
            gpus: 0,
        }
    }

    #[test]
    fn a_request_too_large_to_round_is_too_large_for_aci_not_a_tiny_group() {
        assert!(matches!(
            fit(ProviderKind::Aci, &req(u64::MAX, 512)),
            Err(SizingError::CpuTooLarge { .. })
        ));
        assert!(matches!(
            fit(ProviderKind::Aci, &req(1000, u64::MAX / 2)),
            Err(SizingError::MemoryTooLarge { .. })
        ));
    }

    #[test]
    fn fargate_rounds_a_small_pod_up_to_the_smallest_pair() {
        assert_eq!(
            fit(ProviderKind::Fargate, &req(100, 100)),
            Ok(Size {
                milli_cpu: 250,
                memory_mib: 512
            })
        );
    }

    #[test]
    fn fargate_moves_to_more_cpu_when_memory_does_not_fit_the_smaller_cpu() {
        // 0.25 vCPU tops out at 2 GiB, so 3 GiB needs 0.5 vCPU.
        assert_eq!(
            fit(ProviderKind::Fargate, &req(250, 3 * 1024)),
            Ok(Size {
                milli_cpu: 500,
                memory_mib: 3 * 1024
            })
        );
    }

    #[test]
    fn fargate_rounds_memory_to_its_step_for_large_sizes() {
        // 8 vCPU: 16-60 GiB in 4 GiB steps; 17 GiB becomes 20 GiB.
        assert_eq!(
            fit(ProviderKind::Fargate, &req(5000, 17 * 1024)),
            Ok(Size {
                milli_cpu: 8000,
                memory_mib: 20 * 1024
            })
        );
    }

    #[test]
    fn fargate_rejects_pods_beyond_sixteen_vcpu_or_120_gib() {
        assert!(matches!(
            fit(ProviderKind::Fargate, &req(17000, 1024)),
            Err(SizingError::CpuTooLarge { .. })
        ));
        assert!(matches!(
            fit(ProviderKind::Fargate, &req(1000, 121 * 1024)),
            Err(SizingError::MemoryTooLarge { .. })
        ));
    }

    #[test]
    fn aci_rounds_to_hundredths_of_a_vcpu_and_tenths_of_a_gib() {
        assert_eq!(
            fit(ProviderKind::Aci, &req(1234, 1000)),
            Ok(Size {
                milli_cpu: 1240,
                memory_mib: 1024
            })
        );
        assert_eq!(
            fit(ProviderKind::Aci, &req(0, 0)),
            Ok(Size {
                milli_cpu: 1000,
                memory_mib: 1536
            })
        );
    }

    #[test]
    fn aci_rejects_groups_larger_than_31_vcpu() {
        assert!(matches!(
            fit(ProviderKind::Aci, &req(32_000, 1024)),
            Err(SizingError::CpuTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn every_fitted_size_covers_the_request(cpu in 0u64..20_000, mem in 0u64..130 * 1024) {
            for p in [ProviderKind::Fargate, ProviderKind::Aci, ProviderKind::Cluster] {
                if let Ok(size) = fit(p, &req(cpu, mem)) {
                    prop_assert!(size.milli_cpu >= cpu && size.memory_mib >= mem);
                }
            }
        }

        #[test]
        fn fargate_sizes_are_always_valid_pairs(cpu in 0u64..16_000, mem in 0u64..120 * 1024) {
            if let Ok(size) = fit(ProviderKind::Fargate, &req(cpu, mem)) {
                let (_, lo, hi, step) = FARGATE.iter().copied().find(|row| row.0 == size.milli_cpu).unwrap();
                prop_assert!(size.memory_mib >= lo && size.memory_mib <= hi && (size.memory_mib - lo) % step == 0);
            }
        }
    }
}
