// Azure OpenAI gateway: Application Gateway v2 -> Function App (Flex Consumption, Python 3.11) that
// balances requests over many regional Azure OpenAI deployments, keyless (Entra ID + RBAC).
// `azd up` deploys this file at subscription scope; it creates the resource group rg-<environmentName>.
//
// Modules: raw resources in infra/app/ (one module per concern), not Azure Verified Modules
// (br/public:avm/...). The validators that gate every change run offline (checkov's Bicep scanner,
// pycep-parser and tests/infra), and none of them can fetch registry modules: an AVM-based resource
// would be invisible to the security scan and to the structural tests. The resources are small, so
// the AVM wrappers would add little; each module names its AVM equivalent for a later switch.
// pycep-parser knows a subset of Bicep (no map/reduce/toObject lambdas, no user-defined types, no
// spread operator, no multi-line function calls), and these templates stay inside it.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------------
// azd environment
// ---------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group (rg-<name>) and seeds the resource token.')
param environmentName string

@minLength(1)
@description('Azure region of the gateway resources (must offer Flex Consumption and Application Gateway v2).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or principal (azd sets AZURE_PRINCIPAL_ID); gets Key Vault Secrets Officer. Empty skips it.')
param principalId string = ''

@description('Kind of principalId: User for an interactive azd user, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------------
// Upstream Azure OpenAI resources and keyless access
// ---------------------------------------------------------------------------------------------------

@description('Resource ids of existing Azure OpenAI accounts (any resource group, subscription or region). Each gets "Cognitive Services OpenAI User" for the gateway identity and the SPN.')
param openAiResourceIds array = []

@description('Object id of the service principal (enterprise application) of the seed flow; it gets "Cognitive Services OpenAI User" on every OpenAI resource. Empty skips it.')
param spnObjectId string = ''

@description('Application (client) id of that SPN. When set the gateway authenticates upstream as the SPN (GATEWAY_CREDENTIAL=spn), else as its managed identity.')
param spnClientId string = ''

@description('Tenant id of the SPN; empty means the tenant of this subscription.')
param spnTenantId string = ''

@description('Name of the Key Vault secret that holds the SPN client secret (store it after the first provision).')
param spnSecretName string = 'gateway-spn-secret'

@description('Backends of the gateway: objects {name, endpoint, deployment, logical, tpm, rpm, priority, weight}; endpoint is https://<resource>.openai.azure.com, logical is the name clients use.')
param gatewayBackends array = []

@description('Names of the gateway clients (letters, digits and dashes). Client <name> presents a key held in Key Vault secret gateway-key-<name> or gateway-key-<name>-next (both valid, for rotation); the gateway re-reads them every few minutes.')
param gatewayClients array = []

@description('Tenant id whose Entra ID tokens inbound callers may present; empty accepts gateway keys only.')
param gatewayEntraTenantId string = ''

@description('Audience inbound Entra ID tokens must carry (app id URI or client id); empty accepts gateway keys only.')
param gatewayEntraAudience string = ''

@description('NCRONTAB schedule (six fields, with seconds) of the timer function that probes every backend.')
param healthProbeSchedule string = '*/30 * * * * *'

// ---------------------------------------------------------------------------------------------------
// Optional demo Azure OpenAI accounts
// ---------------------------------------------------------------------------------------------------

@description('Regions in which to create a demo Azure OpenAI account with one model deployment (added to the gateway configuration). Empty creates none.')
param demoRegions array = []

@description('Model of the demo deployments; also their deployment name and the logical name clients use.')
param demoModelName string = 'gpt-4o-mini'

@description('Version of the demo model.')
param demoModelVersion string = '2024-07-18'

@description('Deployment type of the demo deployments.')
@allowed([
  'Standard'
  'GlobalStandard'
  'DataZoneStandard'
])
param demoDeploymentSku string = 'GlobalStandard'

@description('Quota of each demo deployment in thousands of tokens per minute.')
@minValue(1)
param demoCapacity int = 10

// ---------------------------------------------------------------------------------------------------
// Application Gateway
// ---------------------------------------------------------------------------------------------------

@description('DNS label of the gateway public IP (<label>.<region>.cloudapp.azure.com); empty derives one from the resource token.')
param appGatewayDnsLabel string = ''

@description('Key Vault secret id of the TLS certificate for the HTTPS listener; empty serves HTTP on port 80 only.')
param appGatewayCertificateSecretId string = ''

@description('Use WAF_v2 with an OWASP 3.2 policy instead of Standard_v2.')
param appGatewayEnableWaf bool = false

@description('WAF mode when the WAF is on.')
@allowed([
  'Detection'
  'Prevention'
])
param appGatewayWafMode string = 'Prevention'

@description('Seconds the gateway waits for the Function App; long enough for streamed answers.')
@minValue(30)
@maxValue(3600)
param appGatewayRequestTimeoutSeconds int = 230

@description('Minimum Application Gateway instances (0 reserves no capacity units).')
@minValue(0)
@maxValue(125)
param appGatewayMinCapacity int = 0

@description('Maximum Application Gateway instances.')
@minValue(2)
@maxValue(125)
param appGatewayMaxCapacity int = 10

@description('Availability zones of the gateway (for example 1, 2 and 3); empty for regions without zones.')
param appGatewayZones array = []

@description('Who may reach the gateway on ports 80/443: Internet or a CIDR range.')
param allowedClientSourcePrefix string = 'Internet'

@description('Address space of the virtual network.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Address prefix of the Application Gateway subnet.')
param appGatewaySubnetPrefix string = '10.40.0.0/24'

// ---------------------------------------------------------------------------------------------------
// Function App and supporting services
// ---------------------------------------------------------------------------------------------------

@description('Most Function App instances.')
@minValue(1)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Memory of each Function App instance in MB.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Always-ready Function App instances (0 scales to zero; each one is billed while idle).')
@minValue(0)
param functionAlwaysReadyInstances int = 0

@description('Concurrent HTTP requests per Function App instance.')
@minValue(1)
@maxValue(1000)
param functionHttpConcurrency int = 16

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionInDays int = 30

@description('Days a deleted Key Vault stays recoverable (purge protection is on).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.functionApp}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'
var hasCertificate = !empty(appGatewayCertificateSecretId)
var useSpn = !empty(spnClientId)

// Demo accounts: the endpoint follows from the custom subdomain, which is the account name.
var demoAccountPrefix = '${abbrs.cognitiveServicesOpenAi}${resourceToken}-'
var demoBackends = [for region in demoRegions: {
  name: 'demo-${region}'
  endpoint: 'https://${demoAccountPrefix}${region}.openai.azure.com'
  deployment: demoModelName
  logical: demoModelName
  tpm: demoCapacity * 1000
  rpm: demoCapacity * 6
  priority: 1
  weight: 1
}]

// Each client's keys are two Key Vault secrets (both valid at once, so a key rotates without downtime),
// read by name with the Function's managed identity and re-read while it runs: no app setting, no restart.
var gatewayClientEntries = [for client in gatewayClients: {
  name: client
  key_secrets: [
    'gateway-key-${client}'
    'gateway-key-${client}-next'
  ]
}]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    apiIdentityName: '${abbrs.managedIdentity}api-${resourceToken}'
    gatewayIdentityName: '${abbrs.managedIdentity}agw-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalyticsWorkspace}${resourceToken}'
    applicationInsightsName: '${abbrs.applicationInsights}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logAnalyticsRetentionInDays
    publisherPrincipalId: identity.outputs.apiPrincipalId
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    functionPrincipalId: identity.outputs.apiPrincipalId
    principalId: principalId
    principalType: principalType
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    functionPrincipalId: identity.outputs.apiPrincipalId
    principalId: principalId
    principalType: principalType
    gatewayPrincipalId: identity.outputs.gatewayPrincipalId
    grantGatewayAccess: hasCertificate
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module network 'app/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    vnetName: '${abbrs.virtualNetwork}${resourceToken}'
    nsgName: '${abbrs.networkSecurityGroup}agw-${resourceToken}'
    location: location
    tags: tags
    vnetAddressPrefix: vnetAddressPrefix
    appGatewaySubnetPrefix: appGatewaySubnetPrefix
    allowedClientSourcePrefix: allowedClientSourcePrefix
  }
}

// Keyless access to every existing OpenAI resource, at the resource's own scope (any subscription).
// Resource id: /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>
module openAiAccess 'app/openai-rbac.bicep' = [for openAiResourceId in openAiResourceIds: {
  name: take('openai-rbac-${resourceToken}-${uniqueString(openAiResourceId)}', 64)
  scope: resourceGroup(split(openAiResourceId, '/')[2], split(openAiResourceId, '/')[4])
  params: {
    accountName: split(openAiResourceId, '/')[8]
    functionPrincipalId: identity.outputs.apiPrincipalId
    spnObjectId: spnObjectId
  }
}]

module demoOpenAi 'app/openai-demo.bicep' = [for region in demoRegions: {
  name: 'openai-demo-${region}'
  scope: rg
  params: {
    name: '${demoAccountPrefix}${region}'
    location: region
    tags: tags
    deploymentName: demoModelName
    modelName: demoModelName
    modelVersion: demoModelVersion
    skuName: demoDeploymentSku
    capacity: demoCapacity
    functionPrincipalId: identity.outputs.apiPrincipalId
    spnObjectId: spnObjectId
  }
}]

module gatewayConfig 'app/gateway-config.bicep' = {
  name: 'gateway-config'
  scope: rg
  params: {
    backends: concat(gatewayBackends, demoBackends)
    clients: gatewayClientEntries
  }
}

// GATEWAY_CONFIG = {"deployments": {"<logical>": [<host>, ...], ...}, "clients": [...]}
var gatewayConfigJson = string({
  deployments: json('{${join(gatewayConfig.outputs.deploymentEntries, ', ')}}')
  clients: gatewayConfig.outputs.clients
})

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.appServicePlan}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.apiIdentityId
    identityClientId: identity.outputs.apiClientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    appGatewaySubnetId: network.outputs.appGatewaySubnetId
    gatewayConfigJson: gatewayConfigJson
    spnTenantId: useSpn && empty(spnTenantId) ? tenant().tenantId : spnTenantId
    spnClientId: spnClientId
    spnSecretName: spnSecretName
    entraTenantId: gatewayEntraTenantId
    entraAudience: gatewayEntraAudience
    healthProbeSchedule: healthProbeSchedule
    maximumInstanceCount: functionMaximumInstanceCount
    instanceMemoryMB: functionInstanceMemoryMB
    alwaysReadyInstances: functionAlwaysReadyInstances
    httpPerInstanceConcurrency: functionHttpConcurrency
  }
}

module appGateway 'app/appgateway.bicep' = {
  name: 'appgateway'
  scope: rg
  params: {
    name: '${abbrs.appGateway}${resourceToken}'
    publicIpName: '${abbrs.publicIpAddress}agw-${resourceToken}'
    wafPolicyName: '${abbrs.appGatewayWafPolicy}${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.appGatewaySubnetId
    functionAppHostName: functionApp.outputs.defaultHostName
    dnsLabel: empty(appGatewayDnsLabel) ? 'aoai-gateway-${resourceToken}' : appGatewayDnsLabel
    identityId: identity.outputs.gatewayIdentityId
    certificateSecretId: appGatewayCertificateSecretId
    enableWaf: appGatewayEnableWaf
    wafMode: appGatewayWafMode
    requestTimeoutSeconds: appGatewayRequestTimeoutSeconds
    minCapacity: appGatewayMinCapacity
    maxCapacity: appGatewayMaxCapacity
    zones: appGatewayZones
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
  // The certificate's Key Vault role must exist before the gateway fetches the certificate.
  dependsOn: [
    keyVault
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output GATEWAY_DNS_NAME string = appGateway.outputs.fqdn
output GATEWAY_URL string = '${hasCertificate ? 'https' : 'http'}://${appGateway.outputs.fqdn}'
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output GATEWAY_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.apiClientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
