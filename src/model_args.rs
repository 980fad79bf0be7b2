//! The flags every command that loads a model shares: where and in which precision it runs
//! (`--device`, `--dtype`) and, for the commands that generate, a LoRA adapter to apply
//! (`--adapter`, `--merge-adapter`).
use std::path::PathBuf;
use tch::{Device, Kind};

/// A flag value that does not parse, with what was expected.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} {value:?}: {expected}")]
pub struct ArgError {
    pub flag: &'static str,
    pub value: String,
    pub expected: String,
}

/// `--device cpu|cuda[:N]` and `--dtype f32|bf16|f16`: one argument group for every command
/// that loads a model (`generate --local-expert`, `check`, `train`, `sft`, `eval answer-local`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight and activation dtype: `f32`, `bf16` or `f16` (default: f32 on the CPU, bf16 on
    /// CUDA). bf16 works on the CPU too; LoRA adapters keep f32 master values either way.
    #[arg(long)]
    pub dtype: Option<String>,
}

impl DeviceArgs {
    /// The device, checked to exist.
    pub fn device(&self) -> Result<Device, ArgError> {
        let bad = |expected: &str| ArgError { flag: "device", value: self.device.clone(), expected: expected.into() };
        let d = match self.device.as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            s => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => Device::Cuda(n),
                None => return Err(bad("expected cpu, cuda or cuda:N")),
            },
        };
        if let Device::Cuda(n) = d {
            let have = tch::Cuda::device_count().max(0) as usize;
            if n >= have {
                return Err(bad(&format!("this machine has {have} CUDA device(s)")));
            }
        }
        Ok(d)
    }

    /// The dtype (`--dtype`, else f32 on the CPU and bf16 on CUDA).
    pub fn kind(&self) -> Result<Kind, ArgError> {
        match self.dtype.as_deref() {
            None => Ok(if self.device()?.is_cuda() { Kind::BFloat16 } else { Kind::Float }),
            Some("f32" | "float32" | "fp32") => Ok(Kind::Float),
            Some("bf16" | "bfloat16") => Ok(Kind::BFloat16),
            Some("f16" | "float16" | "fp16") => Ok(Kind::Half),
            Some(other) => Err(ArgError { flag: "dtype", value: other.into(), expected: "expected f32, bf16 or f16".into() }),
        }
    }

    /// mllm's load options for these flags.
    pub fn load_options(&self) -> Result<mllm::LoadOptions, ArgError> {
        Ok(mllm::LoadOptions { device: self.device()?, kind: self.kind()? })
    }
}

/// `--adapter DIR [--merge-adapter]`: a PEFT LoRA directory (as `amp train`/`amp sft` write it
/// to `RUN/adapter`) applied to the loaded checkpoint.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdapterArgs {
    /// A PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Fold the adapter into the base weights once (faster decoding) instead of running it
    /// unmerged beside them; both give the same answers up to float rounding.
    #[arg(long, requires = "adapter")]
    pub merge_adapter: bool,
}

impl AdapterArgs {
    /// Load the adapter into `model` (and merge it when asked).
    pub fn apply(&self, model: &mut mllm::Llava) -> mllm::Result<()> {
        if let Some(dir) = &self.adapter {
            model.load_lora(dir)?;
            if self.merge_adapter {
                model.merge_lora();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_dtype_parse_with_named_errors() {
        let a = |d: &str, t: Option<&str>| DeviceArgs { device: d.into(), dtype: t.map(String::from) };
        assert_eq!(a("cpu", None).kind().unwrap(), Kind::Float);
        assert_eq!(a("cpu", Some("bf16")).kind().unwrap(), Kind::BFloat16);
        assert_eq!(a("cpu", Some("f16")).kind().unwrap(), Kind::Half);
        let e = a("cpu", Some("int8")).kind().unwrap_err().to_string();
        assert!(e.contains("--dtype") && e.contains("int8") && e.contains("bf16"), "{e}");
        let e = a("tpu", None).device().unwrap_err().to_string();
        assert!(e.contains("--device") && e.contains("cuda:N"), "{e}");
        if !tch::Cuda::is_available() {
            let e = a("cuda:3", None).device().unwrap_err().to_string();
            assert!(e.contains("0 CUDA device"), "{e}");
        }
    }
}
