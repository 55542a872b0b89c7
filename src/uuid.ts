// The one UUID pattern: Vonage media and recording ids, application ids, token ids. Canonical
// 8-4-4-4-12 hex, any case, any version digit (Vonage's ids are not all version 4).
export const UUID_SOURCE = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
export const UUID = new RegExp(`^${UUID_SOURCE}$`, 'i')
