//! Registers a family, then panics: the host must report the panic and register nothing.

use hangar_plugin_api::{export_plugin, Registrar};

fn register(r: &mut dyn Registrar) {
    r.plugin_name("panics");
    r.family(Box::new(hangar_family_llama::Llama));
    panic!("registration failed on purpose");
}

export_plugin!(register);
