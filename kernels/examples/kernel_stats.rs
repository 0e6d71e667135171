//! What the Vulkan driver made of each decode kernel: registers per invocation, shared memory and
//! code size, read through VK_KHR_pipeline_executable_properties (which wgpu does not expose).
//! Registers set how many 256-invocation workgroups an SM holds at once (65,536 registers, handed
//! out 8 per invocation at a time: two workgroups from 81 to 128 registers, three from 65 to 80,
//! four up to 64), and with it how many loads the decode matvec keeps in flight
//! (bench/RESULTS.md, session 12).
//!
//! `cargo run --release -p hangar-kernels --example kernel_stats`
//!
//! The sources are the ones the backend compiles (`pipelines::shader_source`, subgroup variants),
//! turned into SPIR-V by naga with the options wgpu uses on Vulkan 1.3 and later.

use std::ffi::CStr;

use ash::vk;
use hangar_engine::kv::KvPolicy;
use hangar_engine::quant::GgmlType;
use hangar_kernels::pipelines::{has_q8_unit, shader_source, MvInput, Op, LAYOUT};

fn spirv(src: &str) -> Result<Vec<u32>, String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{e:?}"))?;
    let mut opts = naga::back::spv::Options::default();
    opts.lang_version = (1, 6);
    opts.bounds_check_policies = naga::proc::BoundsCheckPolicies {
        index: naga::proc::BoundsCheckPolicy::Restrict,
        buffer: naga::proc::BoundsCheckPolicy::Unchecked,
        image_load: naga::proc::BoundsCheckPolicy::Restrict,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    };
    let po = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
    naga::back::spv::write_vec(&module, &info, &opts, Some(&po)).map_err(|e| format!("{e:?}"))
}

/// The kernels worth watching: every decode matvec variant per fast type, then the rest of a
/// decode step.
fn kernels() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q5_0, GgmlType::F16] {
        for op in [MvInput::Plain, MvInput::Norm, MvInput::Combine].into_iter().flat_map(|input| [(false, false), (true, false), (false, true), (true, true)].map(|(lean, q8)| Op::Mv { input, lean, q8 })).filter(|op| has_q8_unit(ty) || !matches!(op, Op::Mv { q8: true, .. })) {
            out.push((format!("{op:?}/{ty:?}"), shader_source(op, Some(ty), true)));
        }
    }
    out.push(("Attention(F32)".into(), shader_source(Op::Attention(KvPolicy::F32), None, true)));
    out.push(("Attention(Int4)".into(), shader_source(Op::Attention(KvPolicy::Int4), None, true)));
    out.push(("AttnCombine".into(), shader_source(Op::AttnCombine, None, true)));
    out.push(("Argmax".into(), shader_source(Op::Argmax, None, true)));
    out.push(("Sample".into(), shader_source(Op::Sample, None, true)));
    out.push(("SampleTopK".into(), shader_source(Op::SampleTopK, None, true)));
    out.push(("Matmul/Q4_0".into(), shader_source(Op::Matmul, Some(GgmlType::Q4_0), true)));
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: plain Vulkan calls on objects made here; every struct passed outlives its call.
    unsafe {
        let entry = ash::Entry::load()?;
        let app = vk::ApplicationInfo::default().api_version(vk::make_api_version(0, 1, 3, 0));
        let instance = entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None)?;
        let pds = instance.enumerate_physical_devices()?;
        let discrete = |p: &&vk::PhysicalDevice| instance.get_physical_device_properties(**p).device_type == vk::PhysicalDeviceType::DISCRETE_GPU;
        let pd = *pds.iter().find(discrete).or(pds.first()).ok_or("no Vulkan device")?;
        let name = CStr::from_ptr(instance.get_physical_device_properties(pd).device_name.as_ptr()).to_string_lossy().into_owned();
        let ext = ash::khr::pipeline_executable_properties::NAME;
        let has_ext = instance.enumerate_device_extension_properties(pd)?.iter().any(|e| CStr::from_ptr(e.extension_name.as_ptr()) == ext);
        if !has_ext {
            return Err(format!("{name} has no {}", ext.to_string_lossy()).into());
        }
        let qf = instance
            .get_physical_device_queue_family_properties(pd)
            .iter()
            .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or("no compute queue")? as u32;
        let prio = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default().queue_family_index(qf).queue_priorities(&prio)];
        let exts = [ext.as_ptr()];
        let mut pep = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default().pipeline_executable_info(true);
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default().shader_float16(true).shader_int8(true);
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default().shader_integer_dot_product(true);
        let dci = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&exts)
            .push_next(&mut pep)
            .push_next(&mut f12)
            .push_next(&mut f13);
        let device = instance.create_device(pd, &dci, None)?;
        let pexe = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
        // The backend's one pipeline layout.
        let mut layouts = Vec::new();
        for group in LAYOUT {
            let bindings: Vec<_> = group
                .iter()
                .map(|s| {
                    let ty = match (s.uniform, s.dynamic) {
                        (true, true) => vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                        (true, false) => vk::DescriptorType::UNIFORM_BUFFER,
                        (false, true) => vk::DescriptorType::STORAGE_BUFFER_DYNAMIC,
                        (false, false) => vk::DescriptorType::STORAGE_BUFFER,
                    };
                    vk::DescriptorSetLayoutBinding::default().binding(s.binding).descriptor_type(ty).descriptor_count(1).stage_flags(vk::ShaderStageFlags::COMPUTE)
                })
                .collect();
            layouts.push(device.create_descriptor_set_layout(&vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings), None)?);
        }
        let layout = device.create_pipeline_layout(&vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts), None)?;
        println!("{name}");
        for (label, src) in kernels() {
            let words = spirv(&src).map_err(|e| format!("{label}: {e}"))?;
            let module = device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)?;
            let stage = vk::PipelineShaderStageCreateInfo::default().stage(vk::ShaderStageFlags::COMPUTE).module(module).name(c"main");
            let info = [vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout).flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)];
            let pipe = device.create_compute_pipelines(vk::PipelineCache::null(), &info, None).map_err(|e| e.1)?[0];
            for (i, _) in pexe.get_pipeline_executable_properties(&vk::PipelineInfoKHR::default().pipeline(pipe))?.iter().enumerate() {
                let exe = vk::PipelineExecutableInfoKHR::default().pipeline(pipe).executable_index(i as u32);
                let stats: Vec<String> = pexe
                    .get_pipeline_executable_statistics(&exe)?
                    .iter()
                    .map(|s| {
                        let v = match s.format {
                            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => s.value.b32.to_string(),
                            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                            _ => s.value.f64.to_string(),
                        };
                        format!("{}={v}", CStr::from_ptr(s.name.as_ptr()).to_string_lossy())
                    })
                    .collect();
                println!("{label:<22} {}", stats.join(", "));
            }
            device.destroy_pipeline(pipe, None);
            device.destroy_shader_module(module, None);
        }
        device.destroy_pipeline_layout(layout, None);
        for l in layouts {
            device.destroy_descriptor_set_layout(l, None);
        }
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
    Ok(())
}
