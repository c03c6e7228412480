/**
 * Public API of the mediation broker (docs/mediation.md). Names carry "mediation" where a bare one
 * (DEFAULT_LIMITS, parseTarget) would clash with another module's in src/index.ts.
 */
export { parseChannelDeclarations, validateChannels, DEFAULT_LIMITS as DEFAULT_MEDIATION_LIMITS, MAX_CHANNEL_PORT } from './channels.js';
export type { ChannelDeclaration, ChannelLimits, MediationChannel } from './channels.js';
export { parseTarget as parseMediationTarget, formatTarget as formatMediationTarget } from './target.js';
export type { MediationTarget } from './target.js';
export { probeTarget } from './dial.js';
export type { ProbeResult as TargetProbeResult, ProbeOptions as TargetProbeOptions } from './dial.js';
export { startBroker } from './broker.js';
export type { BrokerOptions, BrokerStats, ChannelReadiness, ChannelStats, MediationBroker, MediationReadiness } from './broker.js';
export {
  parseProxyV2,
  encodeProxyV2,
  encodeMediationHeader,
  readMediationTlvs,
  PROXY_V2_SIGNATURE,
  PP2_TYPE_UNIQUE_ID,
  PP2_TYPE_MICROAGENT_WORKSPACE,
  PP2_TYPE_MICROAGENT_RUNTIME_ID,
  PP2_TYPE_MICROAGENT_CHANNEL_PORT,
} from './proxy-v2.js';
export type { ProxyV2Header, ProxyV2Parse, ProxyV2Tlv, ProxyV2ErrorCode, MediationTlvs } from './proxy-v2.js';
