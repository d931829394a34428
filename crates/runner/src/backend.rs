//! Backend chosen by cargo feature, device chosen at run time.
//!
//! `--device cpu` runs on the CPU backend this binary was built with (`tch`: LibTorch, else
//! `flex` if that feature is on, else `ndarray`); `--device cuda:N` needs a build with
//! `--features cuda` (burn-cuda) or `--features tch` on a CUDA build of LibTorch, and a machine
//! with an NVIDIA driver and GPU. Asking for what is not there is an error, not a panic.

use std::str::FromStr;

use anyhow::{Result, bail};

/// The CPU backend of this build.
#[cfg(feature = "tch")]
pub type CpuBackend = burn::backend::LibTorch<f32>;
/// The CPU backend of this build.
#[cfg(all(feature = "flex", not(feature = "tch")))]
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend of this build.
#[cfg(not(any(feature = "flex", feature = "tch")))]
pub type CpuBackend = burn::backend::NdArray<f32>;

/// Name of the CPU backend of this build, for logs and benchmark tables.
pub fn cpu_backend_name() -> &'static str {
    if cfg!(feature = "tch") {
        "libtorch"
    } else if cfg!(feature = "flex") {
        "flex"
    } else if cfg!(feature = "blas") {
        "ndarray+openblas"
    } else {
        "ndarray"
    }
}

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!(
                    "unknown device {s:?}; expected \"cpu\" or \"cuda:N\""
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu ({})", cpu_backend_name()),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The `--device` option of every command that computes.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct DeviceArg {
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Something to run on whichever backend the device needs.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run on backend `B` and `device`.
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Run `job` on the device `spec` names.
pub fn run_on<T: BackendJob>(spec: DeviceSpec, job: T) -> Result<T::Output> {
    match spec {
        DeviceSpec::Cpu => job.run::<CpuBackend>(Default::default()),
        DeviceSpec::Cuda(index) => run_cuda(index, job),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda<T: BackendJob>(index: usize, job: T) -> Result<T::Output> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::Tensor;
    let device = CudaDevice::new(index);
    // The CUDA runtime panics when no driver or GPU is present; turn that into an error.
    let probe_device = device.clone();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(move || {
        Tensor::<Cuda, 1>::zeros([1], &probe_device).into_data();
    });
    std::panic::set_hook(previous_hook);
    if let Err(panic) = probe {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        bail!("CUDA device cuda:{index} is not usable on this machine: {why}");
    }
    job.run::<Cuda>(device)
}

/// LibTorch's CUDA, when this build has LibTorch and not burn-cuda.
#[cfg(all(feature = "tch", not(feature = "cuda")))]
fn run_cuda<T: BackendJob>(index: usize, job: T) -> Result<T::Output> {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::LibTorchDevice;
    use burn::tensor::Tensor;
    let device = LibTorchDevice::Cuda(index);
    // LibTorch panics when it has no CUDA or the GPU is missing; turn that into an error.
    let probe_device = device;
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(move || {
        Tensor::<LibTorch<f32>, 1>::zeros([1], &probe_device).into_data();
    });
    std::panic::set_hook(previous_hook);
    if let Err(panic) = probe {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        bail!("--device cuda:{index}: LibTorch cannot use this GPU: {why}");
    }
    job.run::<LibTorch<f32>>(device)
}

#[cfg(not(any(feature = "cuda", feature = "tch")))]
fn run_cuda<T: BackendJob>(index: usize, _job: T) -> Result<T::Output> {
    bail!(
        "--device cuda:{index} needs a CUDA build of neuronlab: \
         cargo build --release -p runner --features cuda (or --features tch)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert!(
            "gpu"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("unknown device \"gpu\"")
        );
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(any(feature = "cuda", feature = "tch")))]
    #[test]
    fn cuda_without_cuda_build_is_a_clear_error() {
        struct Nothing;
        impl BackendJob for Nothing {
            type Output = ();
            fn run<B: burn::tensor::backend::Backend>(self, _: B::Device) -> Result<()> {
                Ok(())
            }
        }
        let err = run_on(DeviceSpec::Cuda(0), Nothing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a CUDA build"), "{err}");
    }
}
